#!/usr/bin/env python
"""Benchmark the mint path: what the portal adds to one mint, and how many mints per second C users
minting continuously complete while Requesty takes --latency seconds to answer.

A measurement, not a test: it asserts nothing about timings. It prints what it saw (errors by class
included) and leaves judging the numbers to a person; docs/performance.md records a run.

Set-up (tests/system/harness.py; everything on 127.0.0.1, torn down at the end, also on Ctrl+C or
SIGTERM): a throw-away PostgreSQL database beside the one --database-url names; the stand-in
Requesty in its own process (``python -m standin --control``), so its threads do not share a GIL
with this script's client threads; the portal under ``gunicorn -c gunicorn.conf.py`` with DEBUG
off. WEB_CONCURRENCY, GUNICORN_THREADS and CONN_MAX_AGE pass through from this environment. The
per-user caps and the hourly mint limit are lifted so they never refuse; their checks still run.

Part 1 (overhead): latency 0. --n times in turn: a create straight to the stand-in (the body the
portal sends), then a mint through the portal (GET /keys/new/ for a fresh nonce and CSRF token,
POST it as htmx does). The difference of the medians is what the portal adds to a mint.

Part 2 (sustained): latency --latency. For each C in --concurrency, C signed-in users each loop
GET form -> POST mint without pause; after --settle seconds, the mints whose POST ends within a
--duration-second window are counted, per second, against the ideal C / (latency x W), where W is
the number of Requesty calls a mint waits for one after another (its critical path), not the
number it makes: a mint makes three (the create, then the expiry and the labels) but sends the last
two side by side, so W = 2. W is measured, not assumed: before the windows one mint runs alone, and
W is its POST time over the latency, rounded (best of three); the calls per mint counted at the
stand-in in the window are printed beside it. Each cycle also holds its form GET, so 100% is out of
reach by that GET. The portal's own time per cycle is the mean cycle less W latencies: what the
portal adds to the Requesty waits, comparable whatever W is (when a mint made one call, a cycle
took 1.07-1.08 s per 1 s call: 70-80 ms). --start staggered (default): user k starts k/C of a
latency after the first, as independent people would. --start lockstep: all at the same instant;
with a fixed latency they stay in step, so every cycle is a burst of C mints.

    .venv/bin/python bench/mint.py [--n 200] [--concurrency 8,16,32] [--latency 1] [--duration 20]
        [--settle 3] [--start staggered|lockstep] [--part all|overhead|sustained]
        [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the start-up helper lives in tests/system

import requests  # noqa: E402

from bench._common import fmt, load_average, log, machine, print_machine, run_script, summary, write_json  # noqa: E402
from tests.polling import wait_until  # noqa: E402
from tests.system import harness  # noqa: E402
from tests.system.browser import Client, Form, PortalError, alert_text, shows_secret  # noqa: E402
from tests.system.checks import access_log, log_records, server_errors, state_counts, upstream_keys  # noqa: E402

USER_PREFIX = "bench-user-"


# --- what a request came to ------------------------------------------------------------------------
def classify(response: requests.Response) -> str:
    """'ok' (the secret was shown), or the status and what the portal told the user."""
    if response.status_code == 200 and shows_secret(response):
        return "ok"
    return f"HTTP {response.status_code}: {alert_text(response)[:90] or 'no message'}"


def client_error(exc: Exception) -> str:
    """The requests exception and, where there is one, the low-level cause (RemoteDisconnected...)."""
    inner = exc.args[0] if exc.args else None
    cause = getattr(inner, "reason", None)
    if cause is None and isinstance(inner, Exception) and len(inner.args) > 1:
        cause = inner.args[1]  # urllib3 ProtocolError("Connection aborted.", <cause>)
    detail = f" ({type(cause).__name__})" if isinstance(cause, BaseException) else ""
    return f"client {type(exc).__name__}{detail}"


def fetch_form(client: Client, notes: Counter) -> Form | str:
    """The form, or why not. A GET that fails on a reused connection (gunicorn closing an idle
    keep-alive connection just as it is reused) is retried once, as browsers do; the retry is
    counted in `notes`, never hidden."""
    for attempt in (1, 2):
        try:
            return client.form()
        except PortalError as exc:
            return str(exc)
        except requests.ConnectionError as exc:
            if attempt == 2:
                return client_error(exc)
            notes[f"form GET retried once after {client_error(exc)}"] += 1
        except requests.RequestException as exc:
            return client_error(exc)
    raise AssertionError("unreachable")


def mint(client: Client, name: str, form: Form) -> str:
    try:
        return classify(client.mint(name, form))
    except requests.RequestException as exc:
        return client_error(exc)


# --- CPU and locks -----------------------------------------------------------------------------------
def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), sum(fields) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by the portal (gunicorn master + workers), the stand-in and this script, and how busy
    the whole machine was, between two snapshots. "others" is CPU used by every other process,
    PostgreSQL's included: on a shared machine it says how much the figures were disturbed."""

    def __init__(self, system: harness.System, workers: int) -> None:
        self.portal, self.standin_pid = system.portal, system.standin.pid
        # Every worker forked, so none is missed (after 30 s, measure what there is).
        with suppress(AssertionError):
            wait_until(lambda: len(self.portal.workers()) >= workers, timeout=30, interval=0.2)
        self.pids = [self.portal.pid, *self.portal.workers()]

    def portal_cpu(self) -> float:
        return sum(harness.cpu_seconds(pid) for pid in self.pids)

    def snapshot(self) -> dict:
        busy, total = machine_cpu()
        return {
            "portal": self.portal_cpu(),
            "standin": harness.cpu_seconds(self.standin_pid),
            "bench": harness.cpu_seconds("self"),
            "busy": busy,
            "total": total,
            "workers": sorted(self.portal.workers()),
        }

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        d = {k: b[k] - a[k] for k in ("portal", "standin", "bench", "busy", "total")}
        capacity = d["total"] or 1e-9
        return {
            "portal_cpu_s": round(d["portal"], 3),
            "machine_busy_pct": round(100 * d["busy"] / capacity, 1),
            "others_pct": round(100 * max(0.0, d["busy"] - d["portal"] - d["standin"] - d["bench"]) / capacity, 1),
            # A worker recycled by max_requests takes its CPU time with it: the portal's CPU is then short.
            "workers_recycled": a["workers"] != b["workers"],
        }


class LockSampler:
    """Samples pg_stat_activity every 10 ms and keeps the largest number of the portal's sessions
    seen waiting on a lock at once, by kind (advisory: the per-user mint lock or the audit chain's
    append lock; transactionid/tuple: row locks)."""

    QUERY = (
        "SELECT coalesce(wait_event, '?'), count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' GROUP BY 1"
    )

    def __init__(self, db) -> None:
        self.db = db
        self.peak: Counter[str] = Counter()
        self.busiest = 0
        self._stop = threading.Event()

    def __enter__(self) -> LockSampler:
        self.peak, self.busiest = Counter(), 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.db.connect() as conn:
            while not self._stop.is_set():
                rows = conn.execute(self.QUERY).fetchall()
                for kind, n in rows:
                    self.peak[kind] = max(self.peak[kind], n)
                self.busiest = max(self.busiest, sum(n for _, n in rows))
                self._stop.wait(0.01)


def standin_calls(standin_url: str) -> int:
    """How many API calls the stand-in has answered so far."""
    response = harness.new_http().get(f"{standin_url}/_standin/state", timeout=harness.TIMEOUT)
    response.raise_for_status()
    return response.json()["calls"]


def set_latency(standin_url: str, seconds: float) -> None:
    response = harness.new_http().post(
        f"{standin_url}/_standin/latency", json={"seconds": seconds}, timeout=harness.TIMEOUT
    )
    if response.status_code != 204:
        raise RuntimeError(f"stand-in refused the latency change: HTTP {response.status_code}")


# --- part 1: overhead --------------------------------------------------------------------------------
def part_overhead(args, system: harness.System, client: Client, meter: CpuMeter) -> dict:
    set_latency(system.standin_url, 0)
    direct = harness.new_http()
    times: dict[str, list[float]] = {"direct": [], "form": [], "mint": []}
    cpu = {"form": 0.0, "mint": 0.0}  # portal CPU seconds, summed over the recorded requests
    errors: Counter[str] = Counter()

    def one(i: int, record: bool) -> None:
        t0 = time.perf_counter()
        try:  # the body the portal sends, with a reference suffix of the same length
            response = direct.post(
                f"{system.standin_url}/v1/manage/apikey",
                json={
                    "name": f"bench-direct-{i} [portal:000000000000]",
                    "monthly_limit": 5,
                    "permissions": {"manage": "none", "completions": "write"},
                },
                headers={"Authorization": f"Bearer {harness.TOKEN}", "Accept": "application/json"},
                timeout=harness.TIMEOUT,
            )
            created = response.status_code == 201
        except requests.RequestException:
            created = False
        t1 = time.perf_counter()
        if record and created:
            times["direct"].append(t1 - t0)
        elif record:
            errors["direct create failed"] += 1

        c0, t0 = meter.portal_cpu(), time.perf_counter()
        form = fetch_form(client, errors if record else Counter())
        t1, c1 = time.perf_counter(), meter.portal_cpu()
        if not isinstance(form, Form):
            if record:
                errors[f"form GET: {form}"] += 1
            return
        t2 = time.perf_counter()
        kind = mint(client, f"bench-{i}", form)
        t3, c2 = time.perf_counter(), meter.portal_cpu()
        if record:
            times["form"].append(t1 - t0)
            cpu["form"] += c1 - c0
            if kind == "ok":
                times["mint"].append(t3 - t2)
                cpu["mint"] += c2 - c1
            else:
                errors[f"mint POST: {kind}"] += 1

    log(f"part 1: {args.warmup} warm-up iterations, then {args.n} measured (latency 0)")
    for i in range(args.warmup):
        one(-1 - i, record=False)
    before = meter.snapshot()
    for i in range(args.n):
        one(i, record=True)
    stats = {name: summary(values) for name, values in times.items()}
    medians = stats["mint"]["p50_ms"], stats["direct"]["p50_ms"]
    return {
        "stats": stats,
        "overhead_p50_ms": round(medians[0] - medians[1], 2) if None not in medians else None,
        # Mean portal CPU per request (tick-sampled per process, so only meaningful summed over many).
        "portal_cpu_ms": {k: round(1000 * cpu[k] / len(times[k]), 1) if times[k] else None for k in cpu},
        "cpu": CpuMeter.delta(before, meter.snapshot()),
        "errors": dict(errors),
    }


# --- part 2: sustained -------------------------------------------------------------------------------
def user_loop(args, c: int, index: int, client: Client, stop: threading.Event) -> list[tuple]:
    """One closed-loop user: form GET, mint POST, again, until told to stop; an iteration that has
    started always finishes. Per iteration: (GET start, GET end, POST start, POST end, class, retry
    notes) in perf_counter seconds; the POST times are None when the GET failed."""
    done = []
    if args.start == "staggered":  # user k starts k/C of a latency in
        stop.wait(index * args.latency / c)
    while not stop.is_set():
        notes: Counter[str] = Counter()
        t0 = time.perf_counter()
        form = fetch_form(client, notes)
        t1 = time.perf_counter()
        if not isinstance(form, Form):
            done.append((t0, t1, None, None, f"form GET: {form}", notes))
            stop.wait(0.1)  # a person pauses after an error too; and no busy loop if all fail
            continue
        t2 = time.perf_counter()
        kind = mint(client, f"bench-s{c}-{index}-{len(done)}", form)
        done.append((t0, t1, t2, time.perf_counter(), kind, notes))
        if kind != "ok":
            stop.wait(0.1)
    return done


def requesty_waits(args, client: Client) -> tuple[int, float]:
    """W, the Requesty calls one mint waits for one after another: a mint alone, its POST time over
    the latency, rounded (best of three; the portal's own few ms never reach half a latency). Also
    that best POST time, in seconds."""
    best = None
    for i in range(3):
        form = fetch_form(client, Counter())
        if not isinstance(form, Form):
            raise RuntimeError(f"the mint alone (for W) could not get its form: {form}")
        t0 = time.perf_counter()
        kind = mint(client, f"bench-alone-{i}", form)
        took = time.perf_counter() - t0
        if kind != "ok":
            raise RuntimeError(f"the mint alone (for W) failed: {kind}")
        best = took if best is None else min(best, took)
    return max(1, round(best / args.latency)), best


def part_sustained(args, system: harness.System, clients: list[Client], meter: CpuMeter) -> dict:
    set_latency(system.standin_url, args.latency)
    locks = LockSampler(system.db)
    waits, alone = requesty_waits(args, clients[0])
    log(f"part 2: a mint alone took {1000 * alone:.0f} ms: it waits for {waits} Requesty call(s) one after another")
    results = []
    for c in args.concurrency:
        stop = threading.Event()
        log(f"part 2: C={c}: {args.start} start, {args.settle:g} s settle, then a {args.duration:g} s window")
        with ThreadPoolExecutor(max_workers=c) as pool:
            try:
                futures = [pool.submit(user_loop, args, c, i, cl, stop) for i, cl in enumerate(clients[:c])]
                time.sleep(args.settle)
                before, w0, calls0 = meter.snapshot(), time.perf_counter(), standin_calls(system.standin_url)
                with locks:
                    time.sleep(args.duration)
                w1, after, calls1 = time.perf_counter(), meter.snapshot(), standin_calls(system.standin_url)
            finally:
                stop.set()  # also on Ctrl+C / SIGTERM: the users finish their iteration and return
            iterations = [it for f in futures for it in f.result()]
        cpu = CpuMeter.delta(before, after)

        def inside(t: float | None, w0=w0, w1=w1) -> bool:
            return t is not None and w0 <= t < w1

        ok = [it for it in iterations if it[4] == "ok" and inside(it[3])]
        errors_window: Counter[str] = Counter()
        errors_total: Counter[str] = Counter()
        for _, t1, t2, t3, kind, notes in iterations:
            found = Counter(notes)
            if kind != "ok":
                found[kind if t2 is None else f"mint POST: {kind}"] += 1
            errors_total.update(found)
            if inside(t1 if t2 is None else t3):
                errors_window.update(found)
        # The ideal: C users each spending W latencies per mint (the calls it waits for one after
        # another) and nothing else. The calls it makes in all are counted at the stand-in.
        calls_per_mint = (calls1 - calls0) / len(ok) if ok else None
        window, ideal = w1 - w0, c / (args.latency * waits)
        post = [it[3] - it[2] for it in ok]
        cycles = [it[3] - it[0] for it in ok]
        mean_cycle = sum(cycles) / len(cycles) if cycles else None
        results.append(
            {
                "concurrency": c,
                "window_s": round(window, 3),
                "ok_window": len(ok),
                "per_s": round(len(ok) / window, 2),
                "ideal_per_s": round(ideal, 2),
                "requesty_waits_per_mint": waits,
                "mint_alone_post_ms": round(1000 * alone, 1),
                "requesty_calls_per_mint": None if calls_per_mint is None else round(calls_per_mint, 2),
                "efficiency": round(len(ok) / window / ideal, 3),
                # Little's law: the same rate from the mean cycle, free of the window's +-1 mint per user.
                "per_s_from_cycle": round(c / mean_cycle, 2) if cycles else None,
                "efficiency_from_cycle": round(c / mean_cycle / ideal, 3) if cycles else None,
                # What the portal adds to a cycle beyond its Requesty waits (form GET included).
                "portal_ms_per_cycle": round(1000 * (mean_cycle - waits * args.latency), 1) if cycles else None,
                "mint_post": summary(post),
                "form_get": summary([it[1] - it[0] for it in iterations if it[2] is not None and inside(it[1])]),
                "cycle": summary(cycles),  # GET start -> POST end
                # Half a latency or more beyond its calls: waited for a thread, the CPU or a lock.
                "waited": sum(1 for x in post if x >= args.latency * (waits + 0.5)),
                # Portal CPU in the window per mint completed in it, the form GETs included.
                "portal_cpu_ms_per_mint": round(1000 * cpu["portal_cpu_s"] / len(ok), 1)
                if ok and not cpu["workers_recycled"]
                else None,
                "cpu": cpu,
                "pg_max_lock_waiters": locks.busiest,
                "pg_max_lock_waiters_by_kind": dict(locks.peak),
                "errors_window": dict(errors_window),
                "errors": dict(errors_total),
            }
        )
        x = results[-1]
        log(f"part 2: C={c}: {len(ok)} ok in the window: {x['per_s']}/s of an ideal {x['ideal_per_s']}/s")
    settings = {"latency_s": args.latency, "settle_s": args.settle, "duration_s": args.duration, "start": args.start}
    return {**settings, "results": results}


# --- the report ----------------------------------------------------------------------------------------
def server_side(system: harness.System) -> dict:
    """What the portal logged (read after it stopped) and what the database and stand-in hold."""
    logs = system.log_text()
    records = log_records(logs)
    return {
        "non_success_responses": dict(
            Counter(f"{m} {p.split('?')[0]} {s}" for m, p, s in access_log(logs) if s >= 400).most_common()
        ),
        "warnings_and_errors": dict(
            Counter(
                f"{r.get('level')} {r.get('logger')}: {str(r.get('message'))[:100]}"
                for r in records
                if r.get("level") in ("WARNING", "ERROR", "CRITICAL")
            ).most_common()
        ),
        "server_errors": server_errors(logs)[:20],
    }


def print_errors(errors: dict, indent: str = "  ") -> None:
    for text, count in sorted(errors.items(), key=lambda kv: -kv[1]):
        print(f"{indent}error x{count}: {text}")


def print_report(r: dict) -> None:
    print_machine(r["machine"])
    print(f"  Run: {r['config']}")
    if overhead := r.get("overhead"):
        s = overhead["stats"]
        print()
        print("Part 1 - mint overhead (stand-in latency 0, sequential, one keep-alive connection each)")
        print(f"  {'':36} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
        for key, label in (
            ("direct", "create straight to the stand-in"),
            ("mint", "portal mint  POST /keys/new/ (htmx)"),
            ("form", "portal form  GET /keys/new/"),
        ):
            v = s[key]
            print(
                f"  {label:36} {v['n']:>5} {fmt(v['p50_ms']):>8} {fmt(v['p95_ms']):>8} "
                f"{fmt(v['p99_ms']):>8} {fmt(v['mean_ms']):>8}"
            )
        pc, mc = overhead["portal_cpu_ms"], overhead["cpu"]
        print(f"  Portal overhead per mint (median mint - median direct create): {fmt(overhead['overhead_p50_ms'])} ms")
        print(f"  Portal CPU per request (mean): mint POST {fmt(pc['mint'])} ms, form GET {fmt(pc['form'])} ms")
        print(f"  Machine CPU busy: {mc['machine_busy_pct']}% (other processes: {mc['others_pct']}%)")
        print_errors(overhead["errors"])
    if sustained := r.get("sustained"):
        print()
        print(
            f"Part 2 - sustained (stand-in answers after {sustained['latency_s']} s; C users each loop form GET -> "
            f"mint POST; {sustained['start']} start, {sustained['settle_s']:g} s settle, "
            f"{sustained['duration_s']:g} s window)"
        )
        print(
            f"  {'C':>3} {'ok':>5} {'ideal/s':>8} {'mints/s':>8} {'eff.':>6} {'C/cycle':>8} {'of ideal':>8} "
            f"{'portal':>7} {'waited':>7} {'CPU ms':>7} {'busy':>5} {'others':>6} {'POST p50':>9} {'p95':>6} "
            f"{'GET p50':>8} {'locks':>6}"
        )
        for x in sustained["results"]:
            m, g = x["mint_post"], x["form_get"]
            of_ideal = x["efficiency_from_cycle"]
            print(
                f"  {x['concurrency']:>3} {x['ok_window']:>5} {x['ideal_per_s']:>8} {x['per_s']:>8} "
                f"{x['efficiency']:>6.0%} {fmt(x['per_s_from_cycle'], 2):>8} "
                f"{'-' if of_ideal is None else f'{of_ideal:.0%}':>8} {fmt(x['portal_ms_per_cycle'], 0):>7} "
                f"{x['waited']:>7} "
                f"{fmt(x['portal_cpu_ms_per_mint']):>7} {fmt(x['cpu']['machine_busy_pct'], 0) + '%':>5} "
                f"{fmt(x['cpu']['others_pct'], 0) + '%':>6} {fmt(m['p50_ms'], 0):>9} {fmt(m['p95_ms'], 0):>6} "
                f"{fmt(g['p50_ms']):>8} {x['pg_max_lock_waiters']:>6}"
            )
        for x in sustained["results"]:
            if x["errors"]:
                print(f"  C={x['concurrency']}: in the window / overall:")
                for text, count in sorted(x["errors"].items(), key=lambda kv: -kv[1]):
                    print(f"    error x{x['errors_window'].get(text, 0)} / {count}: {text}")
        first = sustained["results"][0]
        print("  (ok = successful mints whose POST ended in the window; eff. = mints/s / ideal;")
        print(
            f"   ideal = C / (latency x W); W = {first['requesty_waits_per_mint']}: the Requesty calls a mint waits "
            f"for one after another (a mint alone:"
        )
        calls = ", ".join(str(x["requesty_calls_per_mint"]) for x in sustained["results"])
        print(f"   POST {first['mint_alone_post_ms']:.0f} ms); the calls per mint counted at the stand-in: {calls};")
        print("   C/cycle = C / mean cycle: the rate without the window's +-1 mint per user, and its share of the")
        print("   ideal; portal = ms per cycle beyond the W latencies (mean cycle - W x latency, form GET included);")
        print("   waited = mints that took half a latency more than their W; CPU ms = portal CPU per ok mint, its")
        print("   form GET; busy = the machine's CPU use; others = CPU of other processes; POST/GET in ms;")
        print("   locks = most portal sessions waiting on a PostgreSQL lock at once)")
    server = r["server"]
    print()
    print("Server side")
    for title, key in (("4xx/5xx responses", "non_success_responses"), ("warnings logged", "warnings_and_errors")):
        lines = list(server[key].items())[:15]
        print(f"  {title}: {'' if lines else 'none'}")
        for text, count in lines:
            print(f"    {count:>5}  {text}")
    print(f"  500s / unhandled exceptions: {server['server_errors'] or 'none'}")
    print(f"  issuances by state: {server['issuances']}")
    print(f"  keys at the stand-in (part 1's direct creates included): {server['standin_keys']}")


# --- main ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="sequential mints in part 1 (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations before part 1 (default 10)")
    parser.add_argument("--concurrency", default="8,16,32", help="concurrent users in part 2 (default 8,16,32)")
    parser.add_argument("--latency", type=float, default=1.0, help="stand-in latency in part 2, seconds (default 1)")
    parser.add_argument("--duration", type=float, default=20.0, help="part 2's measured window per C, seconds")
    parser.add_argument("--settle", type=float, default=3.0, help="unmeasured run-in before each window, seconds")
    parser.add_argument(
        "--start",
        choices=("staggered", "lockstep"),
        default="staggered",
        help="part 2: users start spread over one latency (default), or all at the same instant",
    )
    parser.add_argument("--part", choices=("all", "overhead", "sustained"), default="all", help="run only one part")
    parser.add_argument(
        "--database-url",
        default=harness.admin_database_url(),
        help="a PostgreSQL server on 127.0.0.1; a bench_mint_<pid> database is created beside this one "
        "and dropped afterwards (default: $DATABASE_URL's server, else postgres://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency takes a comma-separated list of integers, e.g. 8,16,32")
    if args.n < 1 or args.latency <= 0 or args.duration <= 0 or args.settle <= 0 or not args.concurrency:
        parser.error("--n, --latency, --duration, --settle and --concurrency must be positive")
    if min(args.concurrency) < 1 or max(args.concurrency) > 200 or args.duration > 600:
        parser.error("--concurrency 1..200 and --duration up to 600 s: this is bounded on purpose")
    if args.start == "staggered" and args.settle < args.latency:
        parser.error("--settle must be at least --latency with a staggered start (the last user starts then)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = {part: args.part in ("all", part) for part in ("overhead", "sustained")}
    names = [f"{USER_PREFIX}{i}" for i in range(max(args.concurrency) if run["sustained"] else 1)]
    passed = {k: os.environ[k] for k in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "CONN_MAX_AGE") if k in os.environ}
    report: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("json", "database_url")}}
    with harness.System(
        standin=harness.StandinProcess(),
        db_name=f"bench_mint_{os.getpid()}",
        admin_url=args.database_url,
        LOG_LEVEL="WARNING",
        # Far above the latency: a slow mint is measured, never cut off as "outcome unknown".
        REQUESTY_CONNECT_TIMEOUT="5",
        REQUESTY_READ_TIMEOUT="20",
        **passed,
    ) as system:
        system.start(users=names)
        report["machine"] = machine(system.db, system.portal.env)
        meter = CpuMeter(system, workers=report["machine"]["gunicorn"]["workers"])
        log(f"signing in {len(names)} user(s)")
        with ThreadPoolExecutor(max_workers=4) as pool:  # each sign-in is one PBKDF2 hash server-side
            clients = list(pool.map(lambda name: Client(system.portal.base_url).sign_in(name), names))
        if run["overhead"]:
            report["overhead"] = part_overhead(args, system, clients[0], meter)
        if run["sustained"]:
            report["sustained"] = part_sustained(args, system, clients, meter)
        set_latency(system.standin_url, 0)
        states, keys = state_counts(system.db), len(upstream_keys(system.standin_url))
        report["machine"]["load_average_at_end"] = load_average()
        system.portal.stop()  # flush and close the log before reading it
        report["server"] = {**server_side(system), "issuances": states, "standin_keys": keys}
    print_report(report)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    run_script(main)
