#!/usr/bin/env python
"""Load with faults: N simulated users sign in, mint, list their keys and revoke, for a fixed time,
while a share of Requesty calls fail at random; then the reliability invariant is checked.

A measurement plus a check. It prints throughput, p50/p95/p99 latency per step and errors by class
(the figures are for a person to read; docs/reliability.md records a run), and it exits non-zero
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
import platform
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the harness and the stand-in live in the repo

import requests  # noqa: E402

from bench._common import log as _log  # noqa: E402
from bench._common import summary as _summary  # noqa: E402
from standin.server import Fault, StandIn  # noqa: E402
from tests.system import harness  # noqa: E402

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
        from standin.server import Reply

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


def start_standin(stack: ExitStack, args, canary: str, workdir: Path) -> tuple[str, int]:
    stderr = open(workdir / "standin.log", "wb")  # noqa: SIM115 -- lives as long as the child
    stack.callback(stderr.close)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-standin",
            "--fault-rate",
            str(args.fault_rate),
            "--seed",
            str(args.seed),
            "--read-timeout",
            str(args.read_timeout),
        ],
        cwd=ROOT,
        env={**harness.base_env(), "LOAD_CANARY": canary, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
                proc.wait(timeout=10)

    stack.callback(stop)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().decode()
            if match := re.search(r"(http://127\.0\.0\.1:\d+)", line):
                return match.group(1), proc.pid
        if proc.poll() is not None:
            break
    raise RuntimeError(f"the stand-in did not start; see {workdir / 'standin.log'}")


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
    if status == 200 and harness.shows_secret(response):
        return "ok"
    alert = harness.alert_text(response)
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
    except (requests.RequestException, harness.PortalError) as exc:
        results.add(step, time.perf_counter() - started, f"client {type(exc).__name__}")
        return None
    results.add(step, time.perf_counter() - started, classify(response))
    return response


def user_loop(index: int, client: harness.Client, results: Results, stop_at: float, rng: random.Random, args) -> None:
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


def double_submit(client: harness.Client, results: Results, name: str, form: harness.Form) -> bool:
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
    canary = harness.make_canary()
    report: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("json", "serve_standin")}}
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="portal-load-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        standin_url, standin_pid = start_standin(stack, args, canary, workdir)
        system = harness.System(
            standin_url=standin_url,
            workdir=workdir,
            db_name=f"load_{os.getpid()}",
            admin_url=args.database_url,
            LOG_LEVEL="INFO",
            REQUESTY_CONNECT_TIMEOUT="2",
            REQUESTY_READ_TIMEOUT=str(args.read_timeout),
            **{k: os.environ[k] for k in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "CONN_MAX_AGE") if k in os.environ},
        )
        stack.callback(system.close)
        names = [f"load-user-{i}" for i in range(args.users)]
        system.start(users=names)
        portal = system.portal
        report["machine"] = machine_info(system)

        # Phase 1: everyone signs in at once.
        log(f"{args.users} users sign in")
        signin_times: list[float] = []

        def sign_in(name: str) -> harness.Client:
            started = time.perf_counter()
            client = harness.Client(portal.base_url).sign_in(name)
            signin_times.append(time.perf_counter() - started)
            return client

        started = time.perf_counter()
        with ThreadPoolExecutor(args.users) as pool:
            clients = list(pool.map(sign_in, names))
        report["sign_in"] = {"wall_s": round(time.perf_counter() - started, 2), **summary(signin_times)}

        # Phase 2: the timed window.
        log(f"{args.users} users mint, list and revoke for {args.duration:g} s, {args.fault_rate:.0%} of calls failing")
        results = Results()
        cpu_before = cpu_by_process(system, standin_pid)
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
        cpu_after = cpu_by_process(system, standin_pid)
        cpus = report["machine"]["cpus_usable"]
        report["cpu_in_window"] = {
            "capacity_s": round(window * cpus, 1),
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

        # Phase 3: faults off, reconcile, check.
        set_fault_rate(system.standin_url, 0)
        load = standin_load(system.standin_url)
        report["faults_injected"] = dict(sorted(load["stats"].items()))
        report["states_before_reconcile"] = issuance_states(system.db)
        log("reconciling and checking")
        reconciled = portal.reconcile()
        report["reconcile"] = {"exit": reconciled.returncode, "output": reconciled.stdout.rstrip().splitlines()}
        report["states_after_reconcile"] = issuance_states(system.db)
        upstream = harness.upstream_keys(system.standin_url)
        settled = reconciled.returncode == 0
        invariant = harness.check_invariant(system.db, upstream, load["create_names"], settled=settled)
        if reconciled.returncode != 0:
            invariant.append(f"reconcile_keys failed: {reconciled.stderr.strip()[-300:]}")
        invariant += results.violations
        verified = portal.manage("verify_audit", check=False)
        if verified.returncode != 0:
            invariant.append(f"verify_audit: {verified.stderr.strip()[-300:]}")
        logs = system.log_text()
        report["invariant"] = invariant
        report["server_errors"] = harness.server_errors(logs)
        report["responses_by_status"] = dict(
            sorted(Counter(f"{m} {status}" for m, _p, status in harness.access_log(logs)).items())
        )
        leaks = harness.sweep_database(system.db, canary)
        leaks += harness.sweep_text("the server log", logs, canary)
        leaks += harness.sweep_text("the reconciliation's output", reconciled.stdout + reconciled.stderr, canary)
        for client in clients[: args.sweep_users]:
            leaks += harness.sweep_pages(client, canary) + harness.sweep_headers(client, canary)
        report["leaks"] = sorted(set(leaks))
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    failures = ("invariant", "server_errors", "leaks", "unexpected_outcomes")
    report["ok"] = not any(report[k] for k in failures)
    return report


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_by_process(system: harness.System, standin_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each part (PostgreSQL: the backends serving our database now;
    the portal keeps its connections, CONN_MAX_AGE). Read before and after the window."""
    with system.db.connect() as conn:
        backends = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [system.db.name])]
    portal = system.portal
    return {
        "gunicorn": sum(cpu_seconds(p) for p in [portal.pid, *portal.workers()]),
        "postgresql_backends": sum(cpu_seconds(p) for p in backends),
        "standin": cpu_seconds(standin_pid),
        "load_client": time.process_time(),
    }


def issuance_states(db: harness.Database) -> dict[str, int]:
    with db.connect() as conn:
        return dict(conn.execute("SELECT state, count(*) FROM keys_issuance GROUP BY state ORDER BY state").fetchall())


def machine_info(system: harness.System) -> dict:
    model, ram = "", None
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) // 1024
    import django

    def git(*args: str) -> str:
        with suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        return ""

    changed = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    with system.db.connect() as conn:
        pg = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
    code = (
        "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps({k: c[k] for k in ('workers', 'threads', 'worker_class', 'timeout')}))"
    )
    gconf = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=system.portal.env, capture_output=True, text=True, check=True
        ).stdout
    )
    return {
        "code": (git("rev-parse", "--short", "HEAD") or "unknown")
        + (f" + {changed} uncommitted file(s)" if changed else ""),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "ram_mb": ram,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": pg,
        "gunicorn": gconf,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_report(r: dict) -> None:
    m, c, w = r["machine"], r["config"], r["window"]
    g = m["gunicorn"]
    print()
    print("Machine")
    print(f"  {m['cpus_usable']} CPUs ({m['cpu_model']}), {m['ram_mb']} MB RAM; {m['platform']}")
    print(f"  Python {m['python']}, Django {m['django']}, {m['postgresql']}; code {m['code']}")
    print(f"  gunicorn {g['workers']} workers x {g['threads']} threads ({g['worker_class']}), timeout {g['timeout']} s")
    print(f"  load average at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')}")
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


def _interrupt(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl+C: the ExitStack stops gunicorn and the stand-in, drops the database."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_standin:
        return serve_standin(args)
    signal.signal(signal.SIGTERM, _interrupt)
    report = run(args)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
