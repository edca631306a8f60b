"""bench/audit.py's printed report: the machine, the data, each page, the export and verify_audit
(the one table of figures and floors is bench/audit_floors.py's)."""

from __future__ import annotations

from bench._common import fmt, print_machine


def print_report(r: dict, plans: bool) -> None:
    print_machine(r["machine"])
    s, t = r["seed"], r["table"]
    print(f"  PostgreSQL settings: {t['pg']}")
    print()
    seeded = "this run" if s["this_run"] else "an earlier run (--keep-db)"
    print(f"Data: {s['events']} events seeded in {s['seconds']} s ({seeded}), VACUUM (ANALYZE) {s['vacuum_s']} s;")
    print(f"  keys_auditevent: {t['events']} rows (head #{t['head_seq']}), {t['table_mb']} MB", end="")
    print(f", {t['with_indexes_mb']} MB with indexes")
    cfg = r["config"]
    print()
    print(f"Pages, server time in process ({cfg['warmup']} warm-up + {cfg['requests']} timed rounds, round-robin); ms")
    print(
        f"  {'page':44} {'p50':>7} {'p95':>7} {'x floor':>7} {'+floor':>7} {'CPU':>6} {'SQL':>6} {'stmts':>5} {'KB':>5}"
    )
    for x in r["pages"]:
        print(
            f"  {x['name'][:44]:44} {fmt(x['p50_ms'], 2):>7} {fmt(x['p95_ms'], 2):>7} {x['p50_x_floor']:>7.2f} "
            f"{x['p50_above_floor_ms']:>7.2f} {fmt(x['cpu_p50_ms'], 2):>6} {fmt(x['sql_p50_ms'], 2):>6} "
            f"{x['statement_count']:>5} {x['kb']:>5.0f}"
        )
    print("  (x floor = median / the median of the bare view in the same session; CPU = this thread's CPU;")
    print("   SQL = time inside SQL statements; stmts = statements of one request, BEGIN/COMMIT included)")
    print()
    print("  Statements and audit-log query plans (EXPLAIN ANALYZE, warm cache):")
    for x in r["pages"]:
        print(f"  {x['name']}: " + ", ".join(f"{k} x{v}" for k, v in x["statements"].items()))
        for e in x["explain"]:
            removed = (
                f"  (rows removed by filter: {e['rows_removed_by_filter']})" if e["rows_removed_by_filter"] else ""
            )
            print(f"    {fmt(e['execution_ms'], 2):>8} ms  {'; '.join(e['scans'])}{removed}")
            if plans:
                print("\n".join("      " + line for line in [e["sql"], *e["plan"].splitlines()]))
    if x := r.get("export"):
        c = x["copy"]
        print()
        print("Export through gunicorn (one worker; growth = that worker's RSS peak over its baseline)")
        print(
            f"  {'':6} {'rows':>9} {'MB':>6} {'TTFB s':>7} {'total s':>8} {'rows/s':>8} {'x COPY':>7} "
            f"{'growth MB':>9} {'HWM MB':>7} {'CPU s':>6}  complete"
        )
        for e in x["exports"]:
            print(
                f"  {e['format']:6} {e['rows']:>9} {e['mb']:>6} {e['ttfb_s']:>7} {e['total_s']:>8} "
                f"{e['rows_per_s']:>8} {e['total_s'] / c['total_s']:>7.1f} {e['growth_sampled_mb']:>9} "
                f"{fmt(e['growth_kernel_mb']):>7} {e['worker_cpu_s']:>6}  {e['complete']}"
            )
        print(
            f"  {'COPY':6} {c['rows']:>9} {c['mb']:>6} {c['ttfb_s']:>7} {c['total_s']:>8}  (psql, TO STDOUT WITH CSV)"
        )
    if v := r.get("verify"):
        print()
        print(f"verify_audit: {v['message']}")
    if b := r.get("verify_before"):
        print(f"verify as before issue 17: {b['events']} events in {b['seconds']} s ({b['events_per_s']} events/s)")
