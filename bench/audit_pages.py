"""bench/audit.py's part 1, how a page is timed: rounds of every page (in step with the run at
--compare-events, `Lockstep`), each page's time, CPU, SQL and size, then its statements and the
plans of its audit-log queries."""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager, nullcontext

from bench._common import log, summary


@contextmanager
def seq_scans_from_block_zero():
    """PostgreSQL's synchronized scans start a sequential scan where the previous one of the table
    got to, so a repeated query can look cheaper than its first run; off for this page, outside the
    timed window."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET synchronize_seqscans = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronize_seqscans")


def scans(page: dict):
    return seq_scans_from_block_zero() if page["cold"] else nullcontext()


def get(page: dict):
    response = page["client"].get(page["path"])
    if response.status_code != 200:
        raise RuntimeError(f"{page['name']} ({page['path']}): HTTP {response.status_code}")
    return response


def statement_kind(sql: str) -> str:
    s = sql.lstrip()
    if s.upper() in ("BEGIN", "COMMIT", "ROLLBACK") or s.upper().startswith(("SAVEPOINT", "RELEASE")):
        return s.split()[0].lower()
    if "pg_advisory_xact_lock" in s.lower():
        return "advisory lock"
    table = re.search(r'(?:FROM|INTO|UPDATE)\s+"(\w+)"', s, re.IGNORECASE)
    return f"{s.split()[0].lower()} {table.group(1) if table else '?'}"


_SCAN = re.compile(
    r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)(?: Backward)?)(?: (?:using|on) (\S+))?"
)


def explain(sql: str) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return {
        "scans": [m.group(1) + (f" on {m.group(2)}" if m.group(2) else "") for m in _SCAN.finditer(plan)],
        "rows_removed_by_filter": sum(int(x) for x in re.findall(r"Rows Removed by Filter: (\d+)", plan)),
        "execution_ms": float(execution.group(1)) if execution else None,
        "plan": plan,
    }


class Lockstep:
    """--lockstep: this run's rounds of pages alternate with its parent's (bench/audit_floors.Small):
    "ready" on stdout once set up, then each round waits for "go" on stdin and answers "done"."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def say(self, word: str) -> None:
        if self.enabled:
            sys.__stdout__.write(word + "\n")
            sys.__stdout__.flush()

    def wait_for_parent(self) -> None:
        """After the last round: until the parent closes our stdin (its own plans measured)."""
        if self.enabled:
            sys.stdin.read()

    @contextmanager
    def round(self):
        if self.enabled and sys.stdin.readline().strip() != "go":
            raise RuntimeError("--lockstep: the parent stopped before the last round")
        yield
        self.say("done")


def rounds(pages: list[dict], samples: dict, spent: dict) -> None:
    """One timed round: each page once; its time, this thread's CPU, its SQL time and its size."""
    for page in pages:
        with scans(page):
            spent["sql"] = 0.0
            started, cpu = time.perf_counter(), time.thread_time()
            response = get(page)
            elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
        sample = samples[page["name"]]
        sample["total"].append(elapsed)
        sample["cpu"].append(cpu)
        sample["sql"].append(spent["sql"])
        sample["kb"].append(len(response.content) / 1024)


def measure_pages(args, pages: list[dict], between=lambda: None) -> list[dict]:
    """Round-robin over `pages`, warm-ups then timed rounds; `between()` runs after each round (there,
    the small log's round: bench/audit_floors.Small)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    step = Lockstep(args.lockstep)
    step.say("ready")
    spent = {"sql": 0.0}

    def sql_timer(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent["sql"] += time.perf_counter() - started

    log(f"pages: {len(pages)} x ({args.warmup} warm-ups + {args.requests} timed), round-robin")
    for _ in range(args.warmup):
        with step.round():
            for page in pages:
                with scans(page):
                    get(page)
        between()
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with connection.execute_wrapper(sql_timer):
        for _ in range(args.requests):
            with step.round():
                rounds(pages, samples, spent)
            between()
    step.wait_for_parent()
    log("pages: statements and EXPLAIN (ANALYZE, BUFFERS)")
    results = []
    for page in pages:
        with scans(page):
            with CaptureQueriesContext(connection) as ctx:
                get(page)
            s = samples[page["name"]]
            sql = [q["sql"] for q in ctx.captured_queries]
            plans = [
                {"sql": q, **explain(q)}
                for q in sql
                if q.startswith("SELECT") and '"keys_auditevent"' in q.split("WHERE")[0]
            ]
        results.append(
            {
                "name": page["name"],
                "path": page["path"],
                "floor": page["floor"],
                **summary(s["total"]),
                "cpu_p50_ms": round(statistics.median(s["cpu"]) * 1000, 2),
                "sql_p50_ms": round(statistics.median(s["sql"]) * 1000, 2),
                "kb": round(statistics.median(s["kb"]), 1),
                "rounds_ms": [round(t * 1000, 3) for t in s["total"]],  # in round order, for paired comparisons
                "statements": dict(Counter(statement_kind(q) for q in sql)),
                "statement_count": len(sql),
                "explain": plans,
            }
        )
    by_name = {r["name"]: r for r in results}
    for r in results:
        floor = by_name[r["floor"]]
        r["p50_x_floor"] = round(r["p50_ms"] / floor["p50_ms"], 2)
        r["p50_above_floor_ms"] = round(r["p50_ms"] - floor["p50_ms"], 2)
    return results
