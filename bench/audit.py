#!/usr/bin/env python
"""Benchmark pages and the audit log at scale: page server time against a bare view, the export
against PostgreSQL's own COPY, and verify_audit's rate, with --events audit events (1,000,000).

A measurement, not a test: it asserts nothing about timings. It prints what it saw and leaves judging
the numbers to a person; docs/performance.md records a run.

Set-up (tests/system/harness.py, 127.0.0.1 only): a PostgreSQL database (``bench_audit``) beside
the one --database-url names, migrated, seeded with --events hash-chained events by
bench/seed_audit.py (timed), then ``VACUUM (ANALYZE)``. --keep-db reuses a database seeded with the
same --events and keeps it afterwards; otherwise it is dropped at the end. A requester owning
--keys issued keys (with a spending policy that allows them) and an auditor (superuser) are made.
REQUESTY_BASE_URL is a closed port: no page measured here may call Requesty.

1. Pages, in this process: Django with the production settings (DEBUG off, every middleware), the
   root urlconf extended by ``floor/``, a view returning "ok" behind the same middleware, session
   and login requirement. ``django.test.Client`` (force_login) as the requester: the floor,
   /keys/new/ and /keys/; as the auditor: the floor and the /audit/ pages (first, one actor and
   month, its "Older" page, one actor and a month that fills a page on the small log too, a month
   nine months back and its "Older" page, everything before that month, last,
   middle, the middle with sequential scans starting at block 0, a key-name search). Round-robin,
   --warmup rounds, then --requests timed ones; each page's median against its session's floor,
   its SQL time and statements, and EXPLAIN (ANALYZE, BUFFERS) of its audit-log queries (the
   scans; --plans prints the plans).
2. Export: the portal under gunicorn (one worker x 4 threads); /audit/export.csv and .jsonl
   streamed while the worker's RSS is sampled (and its VmHWM reset first), against
   ``psql -c "COPY (same columns, same rows) TO STDOUT WITH CSV"``.
3. ``manage.py verify_audit`` over the whole log: its rate; and the walk as it was before issue 17
   over the first --verify-before events, as its floor.
4. The pages on a log of --compare-events events, measured in step with part 1: this script again
   (pages only, its own database, --busy-month: every tenth event of one month is the actor's, so
   that "one actor, one month (full page)" is a full page there as at --events), its rounds
   alternating with part 1's, so that both sizes meet the same machine; then one table of each
   figure, its floor and the ratio (bench/audit_floors.py).

Part 1's timing is in audit_pages.py, part 2 in audit_export.py, the printed report in
audit_report.py and part 4's table in audit_floors.py; this script sets up, seeds and runs them.

    .venv/bin/python bench/audit.py [--events 1000000] [--keys 50] [--many-keys 500] [--requests 50]
        [--compare-events 10000] [--verify-before 200000] [--keep-db]
        [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the start-up helper lives in tests/system

from bench import audit_floors  # noqa: E402
from bench._common import fmt, load_average, log, machine, run_script, write_json  # noqa: E402
from bench.audit_export import measure_export  # noqa: E402
from bench.audit_pages import get, measure_pages, scans  # noqa: E402
from bench.audit_report import print_report  # noqa: E402
from tests.system import harness  # noqa: E402

# Not a secret: it keys the chain of a throw-away benchmark database. Fixed, so a kept database
# (--keep-db) still verifies on the next run.
HMAC_KEY = "bench-audit-hmac-key-not-a-secret"
REQUESTER, MANY_KEYS_REQUESTER, AUDITOR = "bench-requester", "bench-requester-many", "bench-auditor"
URLCONF = "bench_pages_urls"


# --- data ------------------------------------------------------------------------------------------
def seed_note(args) -> dict:
    """What a kept database must have been seeded with to be reused."""
    note = {"events": args.events, "hmac": hashlib.sha256(HMAC_KEY.encode()).hexdigest()[:16]}
    return {**note, "busy_month": True} if args.busy_month else note


BUSY_ACTOR = 42  # user0042: the actor of the "one actor, one month" pages


def month(days_ago: int) -> tuple[date, date]:
    """A month of the log, by its filters: from the first of the month `days_ago` days back, 30 days."""
    since = (datetime.now(UTC).date() - timedelta(days=days_ago)).replace(day=1)
    return since, since + timedelta(days=30)


def busy_month() -> tuple[int, datetime, datetime]:
    """The month of "one actor, one month (full page)", as seed_audit's `busy` period (the filter
    takes events before the day after `until`)."""
    since, until = month(273)
    start, end = (datetime.combine(day, datetime.min.time(), UTC) for day in (since, until + timedelta(days=1)))
    return BUSY_ACTOR, start, end


def seed(args, db: harness.Database, reuse: bool) -> dict:
    """The seeded log: reused (--keep-db, the same seed note) or written now, timed."""
    from bench.seed_audit import seed_audit

    if reuse:
        kept = json.loads(db.comment())
        log(f"reusing {db.name}: seeded with {args.events} events on {kept['seeded_at']}")
        return {"events": args.events, "seconds": kept["seed_s"], "this_run": False}
    log(f"seeding {args.events} events (minutes at 1,000,000)")
    started, reported = time.perf_counter(), [0]

    def progress(done: int) -> None:
        if done - reported[0] >= args.events // 10:
            reported[0] = done
            log(f"  {done}/{args.events} events after {time.perf_counter() - started:.0f} s")

    seed_audit(args.events, progress=progress, busy=busy_month() if args.busy_month else None)
    seconds = round(time.perf_counter() - started, 1)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    db.set_comment(json.dumps({**seed_note(args), "seed_s": seconds, "seeded_at": stamp}))
    return {"events": args.events, "seconds": seconds, "this_run": True}


def vacuum(db: harness.Database) -> float:
    """VACUUM (ANALYZE) of the whole database, so hint bits and the visibility map are set (and the
    statistics fresh) outside the timings, as autovacuum would have done on a server running a while."""
    started = time.perf_counter()
    with db.connect() as conn:
        conn.execute("VACUUM (ANALYZE)")
    return round(time.perf_counter() - started, 1)


def make_requester(n_keys: int, username: str = REQUESTER):
    """The requester in a group whose spending policy allows n_keys active keys, owning n_keys issued
    keys (each with its Issuance, state "issued", a UUID key id), created over the last months."""
    import uuid
    from decimal import Decimal

    from django.contrib.auth.models import Group, User

    from keys.models import Issuance, IssuedKey, SpendingPolicy

    user = User.objects.get(username=username)
    group, _ = Group.objects.get_or_create(name=f"bench-requesters-{n_keys}")
    limits = {"max_key_limit": Decimal("100"), "max_total_limit": Decimal(100 * n_keys + 100)}
    policy = {**limits, "max_active_keys": n_keys + 10, "max_completions": "write", "manage_requestable": False}
    SpendingPolicy.objects.update_or_create(group=group, defaults=policy)
    user.groups.add(group)
    IssuedKey.objects.filter(owner=user).delete()
    Issuance.objects.filter(actor=user).delete()
    issuances, keys = [], []
    for i in range(n_keys):
        values = {"name": f"bench key {i:03d}", "monthly_limit": Decimal(5 + i % 4 * 10), "completions": "write"}
        key_id = str(uuid.uuid4())
        issuance = Issuance(
            nonce=f"bench-{i}-{uuid.uuid4().hex}",
            actor=user,
            state=Issuance.State.ISSUED,
            api_key_id=key_id,
            upstream_status=201,
            source_ip="127.0.0.1",
            manage="none",
            **values,
        )
        issuances.append(issuance)
        keys.append(IssuedKey(api_key_id=key_id, issuance=issuance, owner=user, manage="none", **values))
    Issuance.objects.bulk_create(issuances)
    IssuedKey.objects.bulk_create(keys)
    now = datetime.now(UTC)
    for i, pk in enumerate(IssuedKey.objects.filter(owner=user).order_by("pk").values_list("pk", flat=True)):
        IssuedKey.objects.filter(pk=pk).update(created_at=now - timedelta(days=3 * (n_keys - i)))
    return user


# --- part 1: pages, in process -----------------------------------------------------------------------
def setup_django(env: dict[str, str]) -> None:
    """The portal's production settings in this process, with a floor view added to its urlconf."""
    os.environ.update({**env, "ALLOWED_HOSTS": "testserver"})
    import django

    django.setup()
    import types

    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import clear_url_caches, path

    import portal.urls

    # Last, so resolving the floor walks past every portal route: at least any real page's cost.
    module = types.ModuleType(URLCONF, "portal.urls plus a minimal view (bench/audit.py)")
    module.urlpatterns = [*portal.urls.urlpatterns, path("floor/", lambda request: HttpResponse("ok"))]
    module.handler500 = portal.urls.handler500
    sys.modules[URLCONF] = module
    settings.ROOT_URLCONF = URLCONF
    clear_url_caches()


def page_list(args, requesters: dict, head_seq: int) -> list[dict]:
    """The pages, named the same whatever the log's size (so a run at --compare-events matches them)."""
    from django.contrib.auth.models import User
    from django.test import Client as DjangoClient

    from portal.audit.models import AuditEvent

    clients = {}
    for n_keys, user in requesters.items():
        clients[n_keys] = DjangoClient()
        clients[n_keys].force_login(user)
    requester, auditor = clients[args.keys], DjangoClient()
    auditor.force_login(User.objects.get(username=AUDITOR))
    actor = f"user{BUSY_ACTOR:04d}"
    since, until = month(182)
    one_month = urlencode({"actor": actor, "since": since, "until": until})
    since, until = month(273)
    full_month = urlencode({"actor": actor, "since": since, "until": until})
    a_month = urlencode({"since": since, "until": until})  # every event of a month nine months back
    before_it = urlencode({"until": since})  # everything before that month

    def older(query: str) -> str | None:
        """The page's own "Older ›" link."""
        found = re.search(rb'href="\?([^"]*before=\d+)"', auditor.get(f"/audit/?{query}").content)
        return "/audit/?" + found.group(1).decode().replace("&amp;", "&") if found else None

    middle = head_seq // 2
    name = AuditEvent.objects.filter(seq__lte=middle).order_by("-seq").values_list("key_name", flat=True)[0]
    pages = [
        ("floor (requester)", "/floor/", requester),
        ("form page /keys/new/", "/keys/new/", requester),
        *((f"My keys /keys/ ({n} keys)", "/keys/", clients[n]) for n in sorted(clients)),
        ("floor (auditor)", "/floor/", auditor),
        ("audit: first page", "/audit/", auditor),
        ("audit: first page, Older", older(""), auditor),
        ("audit: one outcome (denied)", "/audit/?outcome=denied", auditor),
        ("audit: one outcome, Older", older("outcome=denied"), auditor),
        ("audit: one actor, one month", f"/audit/?{one_month}", auditor),
        ("audit: one actor, one month, Older", older(one_month), auditor),
        # A full page on the small log too (--busy-month): like for like with the large log's.
        ("audit: one actor, one month (full page)", f"/audit/?{full_month}", auditor),
        ("audit: one month (no other filter)", f"/audit/?{a_month}", auditor),
        ("audit: one month, Older", older(a_month), auditor),
        ("audit: until a day (no other filter)", f"/audit/?{before_it}", auditor),
        ("audit: last page", "/audit/?last=1", auditor),
        ("audit: middle page", f"/audit/?before={middle}", auditor),
        ("audit: middle, seq scans from block 0", f"/audit/?before={middle}", auditor),
        ("audit: key-name search", f"/audit/?q={name}", auditor),
    ]
    floors = {auditor: "floor (auditor)"} | {c: "floor (requester)" for c in clients.values()}
    return [{"name": n, "path": p, "client": c, "floor": floors[c], "cold": "block 0" in n} for n, p, c in pages if p]


def check_pages(pages: list[dict], n_keys: int) -> None:
    """What must hold before any timing means anything."""
    from django.test import Client as DjangoClient

    anonymous = DjangoClient().get("/floor/")
    if anonymous.status_code != 302 or not anonymous.headers["Location"].startswith("/accounts/login/"):
        raise RuntimeError(f"the floor is not login-required: HTTP {anonymous.status_code}")
    for page in pages:
        with scans(page):
            body = get(page).content
        if page["path"] == "/keys/":  # spend is loaded by htmx after the page: no Requesty call in it
            rows = len(re.findall(rb'<tr id="key-\d+"', body))
            lazy = len(re.findall(rb'hx-get="/keys/\d+/spend/"', body))
            if not 0 < rows == lazy <= n_keys:
                raise RuntimeError(f"My keys shows {rows} rows and {lazy} lazy spend cells for {n_keys} keys")
        if page["path"] == "/keys/new/" and b'name="nonce"' not in body:
            raise RuntimeError("the form page has no mint form")


# --- report ----------------------------------------------------------------------------------------
def table_info(db: harness.Database) -> dict:
    with db.connect() as conn:
        events, head, mb, total_mb = conn.execute(
            "SELECT count(*), max(seq), pg_relation_size('keys_auditevent') / 1e6, "
            "pg_total_relation_size('keys_auditevent') / 1e6 FROM keys_auditevent"
        ).fetchone()
        settings = conn.execute(
            "SELECT string_agg(name || ' ' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings "
            "WHERE name = ANY(%s)",
            [["shared_buffers", "work_mem", "random_page_cost", "jit", "autovacuum", "synchronous_commit"]],
        ).fetchone()[0]
    return {
        "events": events,
        "head_seq": head,
        "table_mb": round(mb),
        "with_indexes_mb": round(total_mb),
        "pg": settings,
    }


# --- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="audit events to seed (default 1000000)")
    parser.add_argument("--keys", type=int, default=50, help="issued keys of the requester (default 50)")
    parser.add_argument("--many-keys", type=int, default=500, help="issued keys of a second requester (default 500)")
    parser.add_argument(
        "--compare-events",
        type=int,
        default=10_000,
        help="also measure the pages on a log this small, in a database of its own (default 10000; 0: no)",
    )
    parser.add_argument(
        "--verify-before", type=int, default=200_000, help="events walked by the pre-issue-17 verify (default 200000)"
    )
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per page first (default 5)")
    parser.add_argument(
        "--database-url",
        default=harness.admin_database_url(),
        help="a PostgreSQL server on 127.0.0.1; the benchmark database is created beside this one "
        "(default: $DATABASE_URL's server, else postgres://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument("--db-name", default="bench_audit", help="the benchmark database (default bench_audit)")
    parser.add_argument("--keep-db", action="store_true", help="reuse a database seeded with --events; keep it")
    parser.add_argument("--no-export", action="store_true", help="skip the export through gunicorn")
    parser.add_argument("--no-verify", action="store_true", help="skip manage.py verify_audit")
    parser.add_argument("--plans", action="store_true", help="print every audit-log query plan in full")
    parser.add_argument(
        "--busy-month",
        action="store_true",
        help="seed every tenth event of the month of 'one actor, one month (full page)' as that actor's, "
        "so that it fills a page on a small log too (the --compare-events run does)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)  # the --compare-events run
    args = parser.parse_args(argv)
    if args.events < 200 or args.keys < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--events at least 200; --keys and --requests positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("json", "database_url")}}
    db = harness.Database(args.database_url, args.db_name)
    reuse = args.keep_db and json.loads(db.comment() or "{}").items() >= seed_note(args).items()
    if args.keep_db and not reuse:
        db.create()  # kept afterwards, but seeded afresh now
    with harness.System(
        standin_url=f"http://127.0.0.1:{harness.closed_port()}",  # no page here may call Requesty
        db_name=args.db_name,
        admin_url=args.database_url,
        reuse_db=args.keep_db,
        AUDIT_HMAC_KEY=HMAC_KEY,
        LOG_LEVEL="WARNING",
    ) as system:
        system.start(users=[REQUESTER, MANY_KEYS_REQUESTER], admins=[AUDITOR], serve=False)
        report["machine"] = machine(system.db, system.env(WEB_CONCURRENCY="1", GUNICORN_THREADS="4"))
        setup_django(system.base_env)
        from django.db import connections

        system.stack.callback(connections.close_all)  # before the database is dropped
        report["seed"] = seed(args, system.db, reuse)
        requesters = {
            args.keys: make_requester(args.keys),
            args.many_keys: make_requester(args.many_keys, MANY_KEYS_REQUESTER),
        }
        report["seed"]["vacuum_s"] = vacuum(system.db)
        small_run = audit_floors.Small(args) if args.compare_events else None
        if small_run:
            system.stack.callback(small_run.close)
        report["table"] = table_info(system.db)
        pages = page_list(args, requesters, report["table"]["head_seq"])
        check_pages(pages, max(requesters))
        if small_run:
            small_run.ready()
        report["pages"] = measure_pages(args, pages, small_run.round if small_run else lambda: None)
        small = small_run.finish() if small_run else None
        if not args.no_export:
            report["export"] = measure_export(system, AUDITOR)
        if not args.no_verify:
            log("verify_audit")
            message = system.manage("verify_audit", timeout=3600).strip().splitlines()[-1]
            # The command's own figures: "N events verified. (S s, R events/s)"
            seconds, rate = re.search(r"\(([\d.]+) s, ([\d,]+) events/s\)", message).groups()
            report["verify"] = {
                "message": message,
                "seconds": float(seconds),
                "events_per_s": int(rate.replace(",", "")),
            }
            if args.verify_before:
                log(f"verify as before issue 17, over the first {args.verify_before} events")
                report["verify_before"] = audit_floors.verify_before(args.verify_before)
        report["machine"]["load_average_at_end"] = load_average()
    report["floors"] = audit_floors.table(report, small)
    if args.lockstep:  # stdout is the parent's pipe; it reads the JSON
        write_json(args.json, report)
        return 0
    print_report(report, args.plans)
    if small:
        print(f"\nPages on the small log ({small['table']['events']} events), the floors of the table below:")
        for x in small["pages"]:
            print(f"  {x['name'][:44]:44} p50 {fmt(x['p50_ms'], 2):>7} ms, SQL {fmt(x['sql_p50_ms'], 2):>6} ms")
    audit_floors.print_table(report["floors"])
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    run_script(main)
