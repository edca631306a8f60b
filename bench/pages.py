#!/usr/bin/env python
"""Benchmark page server time against a floor: the form page, "My keys" and the audit log.

Issue 6, "Performance figures", bullet "Pages": median and p95 server time of the form page
(/keys/new/), "My keys" (/keys/, a requester with 50 keys) and the audit log (/audit/, first page,
1,000,000 events) on PostgreSQL, each compared with a minimal Django view on the same server, in
the same run. A measurement, not a test: it asserts nothing about timings.

Everything runs on 127.0.0.1 and in this process:

1. A dedicated PostgreSQL database (default ``bench_pages``) beside the one ``--database-url``
   names: recreated, migrated, ``manage.py seed_audit --events N --benchmark-database``, the bench
   users and keys created with the ORM, then ``VACUUM (ANALYZE)``. The helpers come from
   bench/audit.py. With ``--keep-db`` a database seeded with the same N is reused and kept.
2. Django with the production settings (DEBUG off, the full middleware stack), except
   ``ROOT_URLCONF``: it points at ``bench_pages_urls``, a module built here in memory that holds
   every route of ``portal.urls`` plus ``floor/``, a view returning ``HttpResponse("ok")``. The
   floor goes through the same middleware, the same session and the same LoginRequiredMiddleware
   as the real pages (checked: anonymous, it redirects to the sign-in page), so it is the least any
   signed-in Django page on this server costs.
3. Two ``django.test.Client`` sessions (``force_login``): a requester owning ``--keys`` issued keys
   (each with its Issuance, state "issued"; a spending policy that allows them, so the form page is
   the normal form) and a superuser who views the audit log. Pages are requested round-robin,
   ``--warmup`` rounds first, then ``--requests`` timed rounds; ``client.get`` is timed with
   ``perf_counter`` (middleware, view, queries, template; no network). Each real page's median is
   divided by the median of the floor requested in the same session.
4. A second pass (``--breakdown-requests``) sums the time spent in SQL per request
   (``connection.execute_wrapper``), one request per page under ``CaptureQueriesContext`` lists
   its statements, and a cProfile pass (``--profile-requests``) gives the shares of template
   rendering, URL reversing and SQL. Outgoing connections made from Python are counted throughout:
   REQUESTY_BASE_URL points at a closed port, and no page here may call Requesty (spend on "My
   keys" is loaded by htmx, one request per row, after the page). As a control, one key's spend
   partial is requested once, untimed: it must show up as a connection to the closed port.

    .venv/bin/python bench/pages.py [--events 1000000] [--keys 50] [--requests 50] [--warmup 5]
        [--breakdown-requests 20] [--profile-requests 20] [--db-name bench_pages] [--keep-db]
        [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import types
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.audit import (  # noqa: E402 -- needs ROOT on sys.path when run as bench/pages.py
    ADMIN_USERNAME,
    DEFAULT_ADMIN_URL,
    HMAC_KEY,
    BenchDatabase,
    _f,
    ensure_superuser,
    log,
    machine_info,
    manage,
    ms_summary,
    portal_env,
    seed,
    setup_django,
)

URLCONF = "bench_pages_urls"
REQUESTER = "bench-requester"
GROUP = "bench-pages-requesters"
CLOSED_URL = "http://127.0.0.1:9"  # portal_env's REQUESTY_BASE_URL: nothing listens there
RESERVED_DB_NAMES = {"postgres", "root", "template0", "template1", "test"}


# --- the floor: portal.urls plus one minimal view ----------------------------------------------------
def install_urlconf() -> None:
    """Register ``bench_pages_urls`` (every portal route, then ``floor/``) and make it the root
    urlconf. The floor comes last, so resolving it walks past every portal route first: its URL
    resolution costs at least as much as any real page's."""
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import clear_url_caches, path

    import portal.urls

    def floor(request):
        return HttpResponse("ok")

    module = types.ModuleType(URLCONF, "portal.urls plus a minimal view (bench/pages.py)")
    module.urlpatterns = [*portal.urls.urlpatterns, path("floor/", floor, name="bench-floor")]
    module.handler500 = portal.urls.handler500
    sys.modules[URLCONF] = module
    settings.ROOT_URLCONF = URLCONF
    clear_url_caches()


# --- outgoing connections from Python (Requesty goes through requests -> socket) -------------------
class ConnectCounter:
    """Counts socket connects made from Python code. psycopg's connections are opened by libpq in
    C and do not pass through here, so anything counted is an HTTP client call (Requesty)."""

    def __init__(self) -> None:
        self.count = 0
        self.targets: Counter = Counter()

    def install(self) -> None:
        counter = self
        original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

        def connect(sock, address):
            counter.count += 1
            counter.targets[str(address)] += 1
            return original_connect(sock, address)

        def connect_ex(sock, address):
            counter.count += 1
            counter.targets[str(address)] += 1
            return original_connect_ex(sock, address)

        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


def closed_port_refuses(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return True  # unreachable counts as closed too


# --- data ------------------------------------------------------------------------------------------
def create_requester(n_keys: int):
    """A plain user (no admin rights) in a group whose spending policy allows n_keys active keys,
    owning n_keys issued keys, each with its Issuance (state "issued"). Recreated on every run."""
    from django.contrib.auth.models import Group, User

    from keys.models import Issuance, IssuedKey, SpendingPolicy

    user, _ = User.objects.get_or_create(username=REQUESTER, defaults={"email": f"{REQUESTER}@example.com"})
    user.set_unusable_password()
    user.is_active, user.is_staff, user.is_superuser = True, False, False
    user.save()
    group, _ = Group.objects.get_or_create(name=GROUP)
    SpendingPolicy.objects.update_or_create(
        group=group,
        defaults={
            "max_key_limit": Decimal("100"),
            "max_total_limit": Decimal(100 * max(n_keys, 1) + 100),
            "max_active_keys": n_keys + 10,
            "max_completions": "write",
            "manage_requestable": False,
        },
    )
    user.groups.add(group)
    IssuedKey.objects.filter(owner=user).delete()
    Issuance.objects.filter(actor=user).delete()
    now = datetime.now(UTC)
    issuances, keys = [], []
    for i in range(n_keys):
        key_id = str(uuid.uuid4())  # Requesty's key ids are UUIDs (keys/requesty.py refuses others)
        values = {
            "name": f"bench key {i:03d}",
            "monthly_limit": Decimal(("5", "10", "25", "50")[i % 4]),
            "manage": "none",
            "completions": ("write", "read")[i % 2],
        }
        issuance = Issuance(
            nonce=f"bench-pages-{i}-{secrets.token_hex(16)}",
            actor=user,
            state=Issuance.State.ISSUED,
            api_key_id=key_id,
            upstream_status=201,
            source_ip="127.0.0.1",
            **values,
        )
        issuances.append(issuance)
        keys.append(IssuedKey(api_key_id=key_id, issuance=issuance, owner=user, **values))
    Issuance.objects.bulk_create(issuances)
    IssuedKey.objects.bulk_create(keys)
    # Spread the creation times over the last months (auto_now_add stamped them all "now").
    for i, key in enumerate(IssuedKey.objects.filter(owner=user).order_by("pk")):
        IssuedKey.objects.filter(pk=key.pk).update(created_at=now - timedelta(days=3 * (n_keys - i)))
    return User.objects.get(pk=user.pk)


# --- measuring -------------------------------------------------------------------------------------
def table_of(sql: str) -> str:
    s = sql.lstrip()
    upper = s.upper()
    if upper in ("BEGIN", "COMMIT", "ROLLBACK") or upper.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
        return upper.split()[0].lower()
    if "PG_ADVISORY_XACT_LOCK" in upper:
        return "advisory lock"
    verb = upper.split()[0].lower()
    match = re.search(r'(?:FROM|INTO|UPDATE)\s+"(\w+)"', s, re.IGNORECASE)
    return f"{verb} {match.group(1) if match else '?'}"


def get(client, page: dict):
    response = client.get(page["path"])
    if response.status_code != 200:
        raise RuntimeError(f"{page['name']} ({page['path']}): HTTP {response.status_code}")
    return response


def checks(pages: list[dict], n_keys: int, counter: ConnectCounter, port_closed: bool) -> dict:
    """What must hold before any timing means anything."""
    from django.conf import settings
    from django.test import Client

    out: dict = {"root_urlconf": settings.ROOT_URLCONF, "debug": settings.DEBUG}
    anonymous = Client().get("/floor/")
    location = anonymous.headers.get("Location", "")
    out["floor_anonymous"] = f"HTTP {anonymous.status_code} -> {location}"
    if anonymous.status_code != 302 or not location.startswith("/accounts/login/"):
        raise RuntimeError(f"the floor is not login-required: {out['floor_anonymous']}")
    out["requesty_base_url"] = settings.REQUESTY_BASE_URL
    out["requesty_port_closed"] = port_closed  # probed before the counter was installed
    if settings.REQUESTY_BASE_URL != CLOSED_URL or not out["requesty_port_closed"]:
        raise RuntimeError(f"REQUESTY_BASE_URL must be a closed port ({CLOSED_URL}): {out}")
    before = counter.count
    for page in pages:
        body = get(page["client"], page).content
        if page["kind"] == "floor" and body != b"ok":
            raise RuntimeError(f"{page['name']}: unexpected body {body[:80]!r}")
        if page["kind"] == "keys":
            rows = len(re.findall(rb'<tr id="key-\d+"', body))
            spend = len(re.findall(rb'hx-get="/keys/\d+/spend/" hx-trigger="load"', body))
            out["keys_rows"], out["keys_spend_placeholders"] = rows, spend
            if rows != n_keys or spend != n_keys:
                raise RuntimeError(f"My keys shows {rows} rows / {spend} spend placeholders, expected {n_keys}")
        if page["kind"] == "form" and b'name="nonce"' not in body:
            raise RuntimeError("the form page has no mint form (re-authentication redirect or no room?)")
        if page["kind"] == "audit":
            out["audit_rows"] = len(re.findall(rb'href="/audit/events/\d+/"', body))
    out["outgoing_connections_during_checks"] = counter.count - before
    # Control: the lazily loaded spend of one key does call Requesty (the closed port refuses), so
    # the counter is shown to see such a call. Outside the timed pages.
    from keys.models import IssuedKey

    requester_page = next(p for p in pages if p["kind"] == "keys")
    key = IssuedKey.objects.filter(owner__username=REQUESTER).order_by("pk").first()
    before = counter.count
    spend = requester_page["client"].get(f"/keys/{key.pk}/spend/", HTTP_HX_REQUEST="true")
    out["control_spend_partial"] = {
        "status": spend.status_code,
        "spend_unavailable_shown": b"Spend unavailable" in spend.content,
        "outgoing_connections": counter.count - before,
    }
    if out["control_spend_partial"]["outgoing_connections"] < 1:
        raise RuntimeError(f"the connection counter missed the spend call: {out['control_spend_partial']}")
    return out


def measure(args, pages: list[dict], counter: ConnectCounter) -> list[dict]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    log(f"pages: {len(pages)} x ({args.warmup} warm-ups + {args.requests} timed), round-robin")
    for _ in range(args.warmup):
        for page in pages:
            get(page["client"], page)
    times: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, int] = {}
    connects: Counter = Counter()
    for _ in range(args.requests):
        for page in pages:
            before = counter.count
            started, cpu_started = time.perf_counter(), time.thread_time()
            response = get(page["client"], page)
            times[page["name"]].append(time.perf_counter() - started)
            cpu[page["name"]].append(time.thread_time() - cpu_started)
            connects[page["name"]] += counter.count - before
            sizes[page["name"]] = len(response.content)

    log(f"pages: SQL time pass ({args.breakdown_requests} per page)")
    sql: dict[str, float] = defaultdict(float)

    def sql_timer(execute, sql_text, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql_text, params, many, context)
        finally:
            sql["seconds"] += time.perf_counter() - t0
            sql["count"] += 1

    sql_samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with connection.execute_wrapper(sql_timer):
        for _ in range(args.breakdown_requests):
            for page in pages:
                sql.clear()
                started = time.perf_counter()
                get(page["client"], page)
                total = time.perf_counter() - started
                sample = sql_samples[page["name"]]
                sample["total"].append(total)
                sample["sql"].append(sql["seconds"])
                sample["count"].append(sql["count"])

    results = []
    for page in pages:
        with CaptureQueriesContext(connection) as ctx:
            get(page["client"], page)
        statements = [table_of(q["sql"]) for q in ctx.captured_queries]
        s = sql_samples[page["name"]]
        results.append(
            {
                "name": page["name"],
                "path": page["path"],
                "kind": page["kind"],
                "session": page["session"],
                **ms_summary(times[page["name"]]),
                "cpu_p50_ms": round(statistics.median(cpu[page["name"]]) * 1000, 2),
                "bytes": sizes[page["name"]],
                "outgoing_connections": connects[page["name"]],
                "sql_pass_total_p50_ms": round(statistics.median(s["total"]) * 1000, 2),
                "sql_p50_ms": round(statistics.median(s["sql"]) * 1000, 2),
                # execute_wrapper sees statements only; CaptureQueriesContext also lists BEGIN/COMMIT
                "statement_counts_seen": sorted(set(int(c) for c in s["count"])),
                "query_count": len(ctx.captured_queries),
                "statements": statements,
                "queries": [q["sql"] for q in ctx.captured_queries],
            }
        )
    floors = {r["session"]: r for r in results if r["kind"] == "floor"}
    for r in results:
        floor = floors[r["session"]]
        r["floor"] = floor["name"]
        r["p50_ratio"] = round(r["p50_ms"] / floor["p50_ms"], 2)
        r["p95_ratio"] = round(r["p95_ms"] / floor["p95_ms"], 2)
        r["p50_above_floor_ms"] = round(r["p50_ms"] - floor["p50_ms"], 2)
    return results


PROFILE_TARGETS = {
    "request": ("django/test/client.py", "request"),
    "template_render": ("django/template/backends/django.py", "render"),
    "url_reverse": ("django/urls/base.py", "reverse"),
    "sql": ("django/db/backends/utils.py", "_execute_with_wrappers"),
}
VIEW_FUNCTIONS = {"floor": "floor", "form": "new_key", "keys": "key_list", "audit": "audit_log"}


def profile(pages: list[dict], requests: int) -> dict:
    """cProfile ``requests`` requests per page; the cumulative time of a few functions as shares."""
    import cProfile
    import pstats

    log(f"pages: cProfile pass ({requests} per page)")
    out = {}
    for page in pages:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            get(page["client"], page)
        profiler.disable()
        stats = pstats.Stats(profiler).stats
        found: dict[str, float] = defaultdict(float)
        for (filename, _line, function), (_cc, _nc, _tt, cumulative, _callers) in stats.items():
            for label, (suffix, name) in PROFILE_TARGETS.items():
                if function == name and filename.endswith(suffix):
                    found[label] += cumulative
            if function == VIEW_FUNCTIONS[page["kind"]] and filename.endswith(("keys/views.py", "keys/audit_views.py")):
                found["view"] += cumulative
            if function == "floor" and page["kind"] == "floor" and filename.endswith("bench/pages.py"):
                found["view"] += cumulative
        total = found["request"] or 1.0
        out[page["name"]] = {
            "ms_per_request": round(total / requests * 1000, 2),
            **{label: round(found[label] / total, 3) for label in ("template_render", "url_reverse", "sql", "view")},
        }
    return out


# --- report ----------------------------------------------------------------------------------------
def print_report(r: dict) -> None:
    m, pg = r["machine"], r["machine"]["postgresql"]
    print()
    print("Machine")
    print(f"  {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_mb']} MB RAM; {m['platform']}")
    print(f"  Python {m['python']}, Django {m['django']}; {pg['version']}")
    dirty = m["uncommitted_app_changes"]
    changes = f", uncommitted changes outside bench/ and docs/: {dirty}" if dirty else ""
    print(f"  Portal at commit {m['commit']}{changes}")
    print(f"  load average: start {m['load_average_at_start']}, end {m['load_average_at_end']}")
    s, t, d = r["seed"], r["table"], r["data"]
    print()
    print("Data")
    seeded = f"seeded in {s['seconds']} s" if s["this_run"] else f"reused (seeded in {s['seconds']} s earlier)"
    print(f"  audit log: {t['events']} events ({seeded}), table {t['table_mb']} MB, {t['total_mb']} MB with indexes")
    print(f"  requester {d['requester']}: {d['keys']} issued keys; auditor {d['auditor']} (superuser)")
    c = r["checks"]
    print()
    print("Checks")
    print(f"  ROOT_URLCONF={c['root_urlconf']}, DEBUG={c['debug']}; anonymous /floor/: {c['floor_anonymous']}")
    print(
        f"  REQUESTY_BASE_URL={c['requesty_base_url']} (port closed: {c['requesty_port_closed']}); "
        f"My keys: {c['keys_rows']} rows, {c['keys_spend_placeholders']} lazy spend placeholders; "
        f"audit page: {c['audit_rows']} rows"
    )
    total_connects = sum(x["outgoing_connections"] for x in r["pages"]) + c["outgoing_connections_during_checks"]
    control = c["control_spend_partial"]
    print(f"  outgoing connections from Python while requesting these pages: {total_connects}")
    print(
        f"  (control: one key's lazily loaded spend, /keys/<pk>/spend/, HTTP {control['status']}, made "
        f"{control['outgoing_connections']} connection(s) to the closed port; 'Spend unavailable' shown: "
        f"{control['spend_unavailable_shown']})"
    )
    print()
    cfg = r["config"]
    print(f"Pages, in process ({cfg['warmup']} warm-up + {cfg['requests']} timed rounds, round-robin); ms")
    print(
        f"  {'page':34} {'p50':>7} {'p95':>7} {'min':>7} {'max':>7} {'p50 x':>6} {'p95 x':>6} {'+p50':>6} "
        f"{'CPU':>6} {'SQL':>6} {'queries':>7} {'KB':>5}"
    )
    for x in r["pages"]:
        print(
            f"  {x['name'][:34]:34} {_f(x['p50_ms'], 2):>7} {_f(x['p95_ms'], 2):>7} {_f(x['min_ms'], 2):>7} "
            f"{_f(x['max_ms'], 2):>7} {x['p50_ratio']:>6.2f} {x['p95_ratio']:>6.2f} {x['p50_above_floor_ms']:>6.2f} "
            f"{_f(x['cpu_p50_ms'], 2):>6} {_f(x['sql_p50_ms'], 2):>6} {x['query_count']:>7} {x['bytes'] // 1024:>5}"
        )
    print("  p50 x / p95 x = ratio to the floor of the same session; +p50 = median above that floor;")
    print("  CPU = this thread's CPU time (p50); SQL = time inside SQL statements (p50, separate pass);")
    print("  queries = statements of one request (CaptureQueriesContext)")
    print()
    print("Statements per page")
    for x in r["pages"]:
        counts = Counter(x["statements"])
        print(f"  {x['name']}: {x['query_count']}: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))
    print("  (as CaptureQueriesContext lists them, BEGIN/COMMIT included; SQL time above covers statements only)")
    if r.get("profile"):
        n = r["config"]["profile_requests"]
        print()
        print(f"Where the time goes, under cProfile ({n} requests per page; shares of the profiled request time)")
        print(f"  {'page':34} {'ms/req':>7} {'template':>8} {'reverse':>8} {'SQL':>6} {'view':>6}")
        for name, x in r["profile"].items():
            print(
                f"  {name[:34]:34} {x['ms_per_request']:>7.1f} {x['template_render']:>8.0%} {x['url_reverse']:>8.0%} "
                f"{x['sql']:>6.0%} {x['view']:>6.0%}"
            )
        print("  (template includes the queries and {% url %} calls evaluated while rendering; reverse = url reversals")
        print("   anywhere; SQL = cursor execution anywhere; view = the view function, its template included.")
        print("   cProfile inflates Python-heavy work, so read the shares, not the milliseconds)")


# --- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="audit events to seed (default 1000000)")
    parser.add_argument("--keys", type=int, default=50, help="issued keys of the requester (default 50)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per page first (default 5)")
    parser.add_argument(
        "--breakdown-requests", type=int, default=20, help="requests per page in the SQL time pass (default 20)"
    )
    parser.add_argument(
        "--profile-requests", type=int, default=20, help="requests per page under cProfile (default 20; 0: skip)"
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN_URL,
        help=f"a PostgreSQL on this machine; the benchmark database is created beside it (default {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--db-name", default="bench_pages", help="the benchmark database (default bench_pages)")
    parser.add_argument("--keep-db", action="store_true", help="reuse a database seeded with --events; keep it")
    parser.add_argument("--no-vacuum", action="store_true", help="plain ANALYZE, not VACUUM (ANALYZE)")
    parser.add_argument("--seed-timeout", type=float, default=3 * 3600, help="seconds (default 3 h)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.events, args.keys, args.requests, args.breakdown_requests) < 1:
        parser.error("--events, --keys, --requests and --breakdown-requests must be positive")
    if args.warmup < 0 or args.profile_requests < 0:
        parser.error("--warmup and --profile-requests cannot be negative")
    name = args.db_name.lower()
    if name in RESERVED_DB_NAMES or name.startswith("test_") or name == urlsplit_db(args.database_url):
        parser.error(f"--db-name {args.db_name!r}: not a shared database; pick a name of your own")
    return args


def urlsplit_db(url: str) -> str:
    return urlsplit(url).path.lstrip("/").lower()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # unwinds like Ctrl+C: the cleanup below runs
    report: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    fingerprint = hashlib.sha256(HMAC_KEY.encode()).hexdigest()[:16]
    workdir = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        db = BenchDatabase(args.database_url, args.db_name)
        meta = db.meta() if args.keep_db else None
        reuse = bool(meta and meta.get("events") == args.events and meta.get("hmac") == fingerprint)
        if not reuse:
            log(f"(re)creating database {db.name}")
            db.recreate()
        if args.keep_db:
            cleanup.callback(log, f"kept database {db.name} ({db.url})")
        else:
            cleanup.callback(db.drop)

        def close_django():
            if "django" in sys.modules:
                from django.db import connections

                connections.close_all()

        cleanup.callback(close_django)  # runs before the drop (LIFO)

        env = portal_env(db.url, workdir / "static", workdir, secrets.token_urlsafe(50))
        log("migrate, collectstatic")
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")
        if reuse:
            log(f"reusing {db.name}: seeded with {meta['events']} events on {meta.get('seeded_at')}")
            seed_s, this_run = meta["seed_s"], False
        else:
            log(f"seed_audit --events {args.events} (minutes at 1,000,000)")
            seed_s, this_run = seed(env, args.events, args.seed_timeout), True
            db.set_meta(
                {
                    "events": args.events,
                    "hmac": fingerprint,
                    "seed_s": round(seed_s, 1),
                    "seeded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        report["seed"] = {"events": args.events, "seconds": round(seed_s, 1), "this_run": this_run}

        setup_django(env)
        install_urlconf()
        from django.test import Client

        log(f"bench users: {REQUESTER} with {args.keys} keys, {ADMIN_USERNAME} (superuser)")
        requester = create_requester(args.keys)
        auditor = ensure_superuser(secrets.token_urlsafe(18))
        maintenance = "ANALYZE" if args.no_vacuum else "VACUUM (ANALYZE)"
        log(maintenance)
        started = time.perf_counter()
        with db.connect() as conn:
            conn.execute(maintenance)
        report["seed"].update({"maintenance": maintenance, "maintenance_s": round(time.perf_counter() - started, 1)})
        report["table"] = db.table_info()
        report["data"] = {"requester": REQUESTER, "keys": args.keys, "auditor": ADMIN_USERNAME}
        report["machine"] = machine_info(db, None)
        report["machine"].pop("gunicorn", None)

        requester_client, auditor_client = Client(), Client()
        requester_client.force_login(requester)
        auditor_client.force_login(auditor)
        pages = [
            {"name": "floor (requester)", "path": "/floor/", "kind": "floor", "session": "requester"},
            {"name": "form page /keys/new/", "path": "/keys/new/", "kind": "form", "session": "requester"},
            {"name": f"My keys /keys/ ({args.keys} keys)", "path": "/keys/", "kind": "keys", "session": "requester"},
            {"name": "floor (auditor)", "path": "/floor/", "kind": "floor", "session": "auditor"},
            {"name": "audit log /audit/ (first page)", "path": "/audit/", "kind": "audit", "session": "auditor"},
        ]
        for page in pages:
            page["client"] = requester_client if page["session"] == "requester" else auditor_client

        port_closed = closed_port_refuses(CLOSED_URL)
        counter = ConnectCounter()
        counter.install()
        report["checks"] = checks(pages, args.keys, counter, port_closed)
        report["load_average_before_pages"] = [round(x, 2) for x in os.getloadavg()]
        report["pages"] = measure(args, pages, counter)
        if args.profile_requests:
            report["profile"] = profile(pages, args.profile_requests)
        report["outgoing_connections"] = {"total": counter.count, "targets": dict(counter.targets)}
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print_report(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
            log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; cleaned up what this script created")
        sys.exit(130)
