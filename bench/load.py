#!/usr/bin/env python
"""Load with faults: N simulated users sign in, mint, list their keys and revoke, for a fixed time,
while a share of Requesty calls fail at random; then the reliability invariant is checked.

A measurement plus a check. It prints throughput, p50/p95/p99 latency per step and errors by class
(the figures are for a person to read; docs/operations.md records a run), and it exits non-zero
if the invariant does not hold afterwards: `manage.py reconcile_keys --stale-minutes 0` succeeds;
every key the stand-in holds is an issued portal key with its `mint.issued` audit event; nothing
is left `requested`/`unknown`; no 500 in the server log; no duplicate mint (each nonce one
issuance, each issuance created upstream at most once, a double-clicked form at most one secret);
the canary secret in no table, log line, page or response header; the audit chain verifies.

Everything runs on 127.0.0.1 (tests/system/harness.py) and is torn down at the end:

- the stand-in Requesty in a child process (``bench/load.py --serve-standin``), so its threads do
  not share a GIL with the client threads; each create and delete it receives fails with
  probability --fault-rate, with a fault drawn from FAULTS (5xx before/after acting, resets,
  429, 400, a read timeout after creating, a 2xx without the secret);
- a dedicated PostgreSQL database (``load_<pid>``) beside --database-url's, dropped at the end;
- the portal under ``gunicorn -c gunicorn.conf.py`` with DEBUG off (WEB_CONCURRENCY and
  GUNICORN_THREADS from this environment are passed through; default 4 x 16), policies generous
  enough that no user hits a cap (PORTAL_MAX_ACTIVE_KEYS, PORTAL_MINTS_PER_HOUR).

Phases: (1) every user signs in at once (PBKDF2 at Django's default cost: CPU-bound, so this is
timed and reported on its own); (2) for --duration seconds each user loops: GET /keys/new/ (the
form), POST it as htmx does (mint), GET /keys/ (list), and POST /keys/<pk>/revoke/ for the key
just minted. With probability --double-submit an iteration posts its form twice at once (a
double click). (3) Faults off, reconciliation, the checks.

    .venv/bin/python bench/load.py [--users 50] [--duration 30] [--fault-rate 0.05] [--seed 1]
                                   [--double-submit 0.05] [--database-url postgres://...]
                                   [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the harness and the stand-in live in the repo

import requests  # noqa: E402

from bench._common import load_average, machine, print_machine, run_script, write_json  # noqa: E402
from bench._common import log as _log  # noqa: E402
from bench._common import summary as _summary  # noqa: E402
from standin import Fault, Reply, StandIn  # noqa: E402
from tests.system import checks, harness  # noqa: E402
from tests.system.browser import Client, Form, PortalError, alert_text, shows_secret  # noqa: E402

CREATE_PATH = "/v1/manage/apikey"
# (name, weight, what happens, the Fault): drawn for a failing create.
CREATE_FAULTS = [
    ("500 before acting", 2, lambda rt: Fault.status(500)),
    ("502 after creating", 2, lambda rt: Fault.after_action_status(502)),
    ("reset before acting", 1, lambda rt: Fault.reset()),
    ("reset after creating", 2, lambda rt: Fault.after_action_reset()),
    ("read timeout after creating", 1, lambda rt: Fault.after_action_delay(rt + 1)),
    ("2xx without the secret", 1, lambda rt: Fault.after_action_body(_without_secret)),
    ("429 Retry-After", 1, lambda rt: Fault.status(429, headers={"Retry-After": "5"})),
    ("400", 1, lambda rt: Fault.status(400)),
]
DELETE_FAULTS = [
    ("500 before acting", 2, lambda rt: Fault.status(500)),
    ("502 after deleting", 1, lambda rt: Fault.after_action_status(502)),
    ("reset before acting", 1, lambda rt: Fault.reset()),
]


def _without_secret(reply) -> str:
    return json.dumps({"api_key_id": reply["api_key_id"]})


def log(message: str) -> None:
    _log(message, tag="load")


def summary(seconds: list[float]) -> dict:
    return _summary(seconds, digits=1)


# --- the stand-in with random faults (child process) -----------------------------------------------
class FaultyStandIn(StandIn):
    """Each create and delete fails with probability `rate` (a fault drawn by weight). Explicit
    injections still come first. Extra control endpoint /_standin/load: GET the statistics and the
    create calls' names; POST {"rate": x} to change the rate."""

    def __init__(self, *args, rate: float, seed: int, read_timeout: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rate, self.read_timeout = rate, read_timeout
        self.random = random.Random(seed)
        self.stats: Counter[str] = Counter()

    def _take_fault(self, method: str, path: str):
        explicit = super()._take_fault(method, path)
        if explicit is not None:
            return explicit
        if method == "POST" and path == CREATE_PATH:
            kind, table = "create", CREATE_FAULTS
        elif method == "DELETE" and path.startswith(CREATE_PATH + "/"):
            kind, table = "delete", DELETE_FAULTS
        else:
            return None
        with self._lock:
            self.stats[f"{kind} calls"] += 1
            if self.random.random() >= self.rate:
                return None
            name, _, make = self.random.choices(table, weights=[w for _, w, _ in table])[0]
            self.stats[f"{kind}: {name}"] += 1
        return make(self.read_timeout)

    def _control(self, method: str, path: str, raw: bytes):
        if path != "/_standin/load":
            return super()._control(method, path, raw)
        with self._lock:
            if method == "POST":
                self.rate = float(json.loads(raw or b"{}").get("rate", self.rate))
                return Reply(204)
            names = [c.body["name"] for c in self._calls if c.method == "POST" and c.path == CREATE_PATH and c.body]
            return Reply(200, {"stats": dict(self.stats), "create_names": names, "rate": self.rate})


def serve_standin(args) -> int:
    """Child process: serve until SIGTERM/SIGINT, the URL on the first line of stdout."""
    standin = FaultyStandIn(
        host="127.0.0.1",
        port=0,
        admin_token=harness.TOKEN,
        control=True,
        rate=args.fault_rate,
        seed=args.seed,
        read_timeout=args.read_timeout,
    )
    canary = os.environ["LOAD_CANARY"]
    standin.secret_factory = lambda: canary
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    standin.start()
    print(standin.base_url, flush=True)
    stopping.wait()
    standin.stop()
    return 0


def faulty_standin(args, canary: str) -> harness.StandinProcess:
    """This script again, as the child process that serves FaultyStandIn."""
    options = {"--fault-rate": args.fault_rate, "--seed": args.seed, "--read-timeout": args.read_timeout}
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-standin"]
    command += [str(part) for option in options.items() for part in option]
    return harness.StandinProcess(command, env={"LOAD_CANARY": canary})


def standin_load(url: str) -> dict:
    response = harness.new_http().get(f"{url}/_standin/load", timeout=harness.TIMEOUT)
    response.raise_for_status()
    return response.json()


def set_fault_rate(url: str, rate: float) -> None:
    harness.new_http().post(f"{url}/_standin/load", json={"rate": rate}, timeout=harness.TIMEOUT).raise_for_status()


# --- the simulated users ---------------------------------------------------------------------------
def classify_mint(response: requests.Response) -> str:
    """'ok' (a secret was shown), or what the user was told, in a few words."""
    status, text = response.status_code, response.text
    if status == 200 and shows_secret(response):
        return "ok"
    alert = alert_text(response)
    if status == 202:
        return "202 outcome unknown (being checked)"
    if status == 409:
        return "409 duplicate (form already submitted)"
    if status == 503 and "could not be recorded" in alert:
        return "503 created, record failed, compensated"
    if status == 503 and "database" in alert:
        return "503 portal database unavailable"
    if status == 503 and "could not be reached" in alert:
        return "503 Requesty unreachable"
    if status == 429:
        return "429 Requesty busy (Retry-After)" if "Requesty" in alert else "429 portal rate limit"
    if status == 502 and "refused these values" in alert:
        return "502 Requesty refused (400)"
    if status == 502 and "misconfigured" in alert:
        return "502 Requesty auth failed"
    if status == 500:
        return "500 server error"
    if status == 403 and "CSRF" in text:
        return "403 CSRF failure"
    return f"{status} {alert[:60]}".strip()


def classify_revoke(response: requests.Response) -> str:
    if response.status_code != 200:
        return f"{response.status_code}"
    if "Revoked." in response.text:
        return "ok"
    if "already deleted in Requesty" in response.text:
        return "ok (already gone upstream)"
    if 'role="alert"' in response.text:
        return "200 revoke failed upstream (row shows the error)"
    return "200 unexpected row"


EXPECTED_MINT = {
    "ok",
    "202 outcome unknown (being checked)",
    "409 duplicate (form already submitted)",
    "503 created, record failed, compensated",
    "429 Requesty busy (Retry-After)",
    "502 Requesty refused (400)",
}
EXPECTED_REVOKE = {"ok", "ok (already gone upstream)", "200 revoke failed upstream (row shows the error)"}


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.violations: list[str] = []
        self.iterations = 0
        self.double_submits = 0

    def add(self, step: str, seconds: float, outcome: str) -> None:
        with self.lock:
            self.times[step].append(seconds)
            self.outcomes[step][outcome] += 1

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)


def timed(results: Results, step: str, call, classify):
    """Run one request; record its time and outcome class (client exceptions included)."""
    started = time.perf_counter()
    try:
        response = call()
    except (requests.RequestException, PortalError) as exc:
        results.add(step, time.perf_counter() - started, f"client {type(exc).__name__}")
        return None
    results.add(step, time.perf_counter() - started, classify(response))
    return response


def user_loop(index: int, client: Client, results: Results, stop_at: float, rng: random.Random, args) -> None:
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        name = f"load-{index}-{n}"
        form = timed(results, "form", client.form, lambda f: "ok")
        if form is None:
            continue
        if rng.random() < args.double_submit:
            minted = double_submit(client, results, name, form)
        else:
            response = timed(results, "mint", lambda name=name, form=form: client.mint(name, form), classify_mint)
            minted = response is not None and classify_mint(response) == "ok"
        listed = timed(results, "list", client.keys, lambda keys: "ok")
        with results.lock:
            results.iterations += 1
        if not minted or listed is None:
            continue
        if name not in listed:
            results.violation(f"{name}: minted (secret shown) but not on /keys/")
            continue
        timed(results, "revoke", lambda pk=listed[name]: client.revoke(pk), classify_revoke)


def double_submit(client: Client, results: Results, name: str, form: Form) -> bool:
    """The same form posted twice at once, as a double click would: at most one secret."""
    with results.lock:
        results.double_submits += 1
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def post() -> None:
        barrier.wait(5)
        response = timed(results, "mint (double submit)", lambda: client.mint(name, form), classify_mint)
        outcomes.append("client error" if response is None else classify_mint(response))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if outcomes.count("ok") > 1:
        results.violation(f"{name}: one form gave two secrets")
    return "ok" in outcomes


# --- the run -----------------------------------------------------------------------------------------
def run(args) -> dict:
    """Start everything, load it, check it, tear it down; the report as a dict."""
    canary = checks.make_canary()
    report: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("json", "serve_standin")}}
    passed = {k: os.environ[k] for k in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "CONN_MAX_AGE") if k in os.environ}
    with harness.System(
        standin=faulty_standin(args, canary),
        db_name=f"load_{os.getpid()}",
        admin_url=args.database_url,
        LOG_LEVEL="INFO",
        REQUESTY_CONNECT_TIMEOUT="2",
        REQUESTY_READ_TIMEOUT=str(args.read_timeout),
        **passed,
    ) as system:
        names = [f"load-user-{i}" for i in range(args.users)]
        system.start(users=names)
        report["machine"] = machine(system.db, system.portal.env)
        clients = sign_in_all(system, names, report)
        results = load_window(args, system, clients, report)
        check(args, system, clients, results, canary, report)
        report["machine"]["load_average_at_end"] = load_average()
    failures = ("invariant", "server_errors", "leaks", "unexpected_outcomes")
    report["ok"] = not any(report[k] for k in failures)
    return report


def sign_in_all(system: harness.System, names: list[str], report: dict) -> list[Client]:
    """Phase 1: everyone signs in at once (PBKDF2 at Django's default cost: CPU-bound)."""
    log(f"{len(names)} users sign in")
    times: list[float] = []

    def sign_in(name: str) -> Client:
        started = time.perf_counter()
        client = Client(system.portal.base_url).sign_in(name)
        times.append(time.perf_counter() - started)
        return client

    started = time.perf_counter()
    with ThreadPoolExecutor(len(names)) as pool:
        clients = list(pool.map(sign_in, names))
    report["sign_in"] = {"wall_s": round(time.perf_counter() - started, 2), **summary(times)}
    return clients


def load_window(args, system: harness.System, clients: list[Client], report: dict) -> Results:
    """Phase 2: every user loops form, mint, list, revoke for --duration seconds."""
    log(f"{args.users} users mint, list and revoke for {args.duration:g} s, {args.fault_rate:.0%} of calls failing")
    results = Results()
    cpu_before = cpu_by_process(system)
    started = time.perf_counter()
    stop_at = time.monotonic() + args.duration
    with ThreadPoolExecutor(args.users) as pool:
        futures = [
            pool.submit(user_loop, i, c, results, stop_at, random.Random(args.seed * 1000 + i), args)
            for i, c in enumerate(clients)
        ]
        for f in futures:
            f.result()
    window = time.perf_counter() - started
    cpu_after = cpu_by_process(system)
    report["cpu_in_window"] = {
        "capacity_s": round(window * report["machine"]["cpus_usable"], 1),
        **{k: round(cpu_after[k] - cpu_before.get(k, 0.0), 1) for k in cpu_after},
    }
    requests_done = sum(len(v) for v in results.times.values())
    mints_ok = results.outcomes["mint"]["ok"] + results.outcomes["mint (double submit)"]["ok"]
    report["window"] = {
        "seconds": round(window, 2),
        "requests": requests_done,
        "requests_per_s": round(requests_done / window, 1),
        "iterations": results.iterations,
        "iterations_per_s": round(results.iterations / window, 2),
        "mints_ok_per_s": round(mints_ok / window, 2),
        "double_submits": results.double_submits,
    }
    report["steps"] = {
        step: {**summary(results.times[step]), "outcomes": dict(results.outcomes[step].most_common())}
        for step in ("form", "mint", "mint (double submit)", "list", "revoke")
        if results.times[step]
    }
    unexpected = Counter()
    for step, outcomes in results.outcomes.items():
        allowed = {"form": {"ok"}, "list": {"ok"}, "revoke": EXPECTED_REVOKE}.get(step, EXPECTED_MINT)
        for outcome, n in outcomes.items():
            if outcome not in allowed:
                unexpected[f"{step}: {outcome}"] += n
    report["unexpected_outcomes"] = dict(unexpected)
    return results


def check(args, system: harness.System, clients: list[Client], results: Results, canary: str, report: dict) -> None:
    """Phase 3: faults off, reconciliation, then the invariant, the server log and the leak sweep."""
    set_fault_rate(system.standin_url, 0)
    load = standin_load(system.standin_url)
    report["faults_injected"] = dict(sorted(load["stats"].items()))
    report["states_before_reconcile"] = checks.state_counts(system.db)
    log("reconciling and checking")
    reconciled = system.portal.reconcile()
    report["reconcile"] = {"exit": reconciled.returncode, "output": reconciled.stdout.rstrip().splitlines()}
    report["states_after_reconcile"] = checks.state_counts(system.db)
    upstream = checks.upstream_keys(system.standin_url)
    settled = reconciled.returncode == 0
    invariant = checks.check_invariant(system.db, upstream, load["create_names"], settled=settled)
    if reconciled.returncode != 0:
        invariant.append(f"reconcile_keys failed: {reconciled.stderr.strip()[-300:]}")
    invariant += results.violations
    verified = system.portal.manage("verify_audit", check=False)
    if verified.returncode != 0:
        invariant.append(f"verify_audit: {verified.stderr.strip()[-300:]}")
    logs = system.log_text()
    report["invariant"] = invariant
    report["server_errors"] = checks.server_errors(logs)
    report["responses_by_status"] = dict(
        sorted(Counter(f"{m} {status}" for m, _p, status in checks.access_log(logs)).items())
    )
    leaks = checks.sweep_database(system.db, canary)
    leaks += checks.sweep_text("the server log", logs, canary)
    leaks += checks.sweep_text("the reconciliation's output", reconciled.stdout + reconciled.stderr, canary)
    for client in clients[: args.sweep_users]:
        leaks += checks.sweep_pages(client, canary) + checks.sweep_headers(client, canary)
    report["leaks"] = sorted(set(leaks))


def cpu_by_process(system: harness.System) -> dict[str, float]:
    """CPU seconds used so far by each part (PostgreSQL: the backends serving our database now;
    the portal keeps its connections, CONN_MAX_AGE). Read before and after the window."""
    with system.db.connect() as conn:
        backends = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [system.db.name])]
    portal = system.portal
    return {
        "gunicorn": sum(harness.cpu_seconds(p) for p in [portal.pid, *portal.workers()]),
        "postgresql_backends": sum(harness.cpu_seconds(p) for p in backends),
        "standin": harness.cpu_seconds(system.standin.pid),
        "load_client": time.process_time(),
    }


def print_report(r: dict) -> None:
    c, w = r["config"], r["window"]
    print_machine(r["machine"])
    print()
    print(
        f"Run: {c['users']} users, {c['duration']:g} s window, {c['fault_rate']:.0%} of creates/deletes failing, "
        f"{c['double_submit']:.0%} double submits, seed {c['seed']}"
    )
    s = r["sign_in"]
    print(
        f"Sign-in (all at once): {s['n']} in {s['wall_s']} s; "
        f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']}, p99 {s['p99_ms']}, max {s['max_ms']}"
    )
    print(
        f"Window: {w['requests']} requests in {w['seconds']} s = {w['requests_per_s']} req/s; "
        f"{w['iterations']} iterations ({w['iterations_per_s']}/s); {w['mints_ok_per_s']} secrets shown/s; "
        f"{w['double_submits']} double submits"
    )
    u = r["cpu_in_window"]
    print(
        f"CPU seconds in the window (capacity {u['capacity_s']}): gunicorn {u['gunicorn']}, "
        f"PostgreSQL backends {u['postgresql_backends']}, stand-in {u['standin']}, this client {u['load_client']}"
    )
    print()
    print(f"  {'step':22} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for step, x in r["steps"].items():
        print(f"  {step:22} {x['n']:>6} {x['p50_ms']:>8} {x['p95_ms']:>8} {x['p99_ms']:>8} {x['max_ms']:>8}")
    print()
    print("Outcomes by class")
    for step, x in r["steps"].items():
        for outcome, n in x["outcomes"].items():
            print(f"  {step:22} {n:>6}  {outcome}")
    print()
    print("Faults the stand-in injected")
    for name, n in r["faults_injected"].items():
        print(f"  {n:>6}  {name}")
    print()
    print(f"Issuances before reconciliation: {r['states_before_reconcile']}")
    print(f"reconcile_keys --stale-minutes 0 (exit {r['reconcile']['exit']}):")
    for line in r["reconcile"]["output"]:
        if not line.startswith("         "):
            print(f"  {line}")
    print(f"Issuances after reconciliation:  {r['states_after_reconcile']}")
    print(f"Responses by status: {r['responses_by_status']}")
    print()
    print("Checks")
    print(f"  invariant: {'holds' if not r['invariant'] else r['invariant']}")
    print(f"  500s / unhandled exceptions: {r['server_errors'] or 'none'}")
    print(f"  unexpected outcomes: {r['unexpected_outcomes'] or 'none'}")
    print(f"  canary found: {r['leaks'] or 'nowhere'}")
    print(f"  => {'OK' if r['ok'] else 'FAILED'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the mint/list/revoke window")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of creates and deletes that fail")
    parser.add_argument("--double-submit", type=float, default=0.05, help="share of iterations posting twice")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--read-timeout", type=float, default=5.0, help="REQUESTY_READ_TIMEOUT for the portal")
    parser.add_argument("--sweep-users", type=int, default=50, help="users whose pages the leak sweep fetches")
    parser.add_argument("--database-url", default=harness.admin_database_url(), help="PostgreSQL server (127.0.0.1)")
    parser.add_argument("--json", help="also write the report as JSON to this file")
    parser.add_argument("--serve-standin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.serve_standin and not (1 <= args.users <= 200 and 0 < args.duration <= 600):
        parser.error("--users 1..200 and --duration up to 600 s: this is bounded on purpose")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_standin:
        return serve_standin(args)
    report = run(args)
    print_report(report)
    write_json(args.json, report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    run_script(main)
