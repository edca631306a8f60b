#!/usr/bin/env python
"""Benchmark the audit log at scale: page server time at 1,000,000 events, and export memory.

A measurement, not a test: it asserts nothing about timings. It prints what it saw and leaves judging
the numbers to a person; docs/audit-performance.md records a run and reads it against issue 3
(pages under 50 ms of server time at the median; a full export growing the worker by < 50 MB).

Everything runs on 127.0.0.1:

1. A dedicated PostgreSQL database (default ``bench_audit``) beside the one ``--database-url`` names:
   dropped and recreated, migrated, then ``manage.py seed_audit --events N`` (timed) and
   ``VACUUM (ANALYZE)``. With ``--keep-db`` an already seeded database (same N, same HMAC key) is
   reused and left in place afterwards; otherwise it is dropped at the end.
2. Pages, in this process: Django with the production settings (DEBUG off), ``django.test.Client``
   signed in as a superuser, ``client.get`` timed with ``perf_counter`` (that is the server time:
   middleware, view, the audit.viewed append and template rendering; no network, no browser).
   Pages are requested round-robin, warm-ups first. A second, shorter pass splits the time into page
   queries, the append, rendering and the rest; one more request per page captures the SQL, whose
   SELECTs are run again under ``EXPLAIN (ANALYZE, BUFFERS)`` (printed in full unless --no-plans).
   The middle page is also timed with ``synchronize_seqscans`` off in this session (set outside the
   timed window), so a sequential scan there starts at block 0 instead of where the previous one
   stopped: repeating a query must not hide what its first run costs.
3. Export: the portal under gunicorn as production starts it (``gunicorn -c gunicorn.conf.py``, one
   worker, 4 threads), signed in with requests; ``/audit/export.csv`` and ``.jsonl`` streamed with
   ``stream=True`` while the worker's VmRSS is sampled every 50 ms (and its VmHWM reset before each
   export, so the kernel's own peak is reported too). The same pages are also fetched over HTTP
   (client time and gunicorn's own request time from its access log). For comparison, the same
   rows through PostgreSQL's ``COPY ... TO STDOUT WITH CSV`` via psql (a floor), and the export
   generators run in this process without HTTP.
4. ``manage.py verify_audit`` over the whole log, timed (skip with --no-verify).

    .venv/bin/python bench/audit.py [--events 1000000] [--database-url postgres://postgres@127.0.0.1:5432/postgres]
                                    [--db-name bench_audit] [--keep-db] [--json out.json] [--no-plans]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script

from bench._common import free_port, log, new_client  # noqa: E402
from bench._common import summary as ms_summary  # noqa: E402

DEFAULT_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Not a secret: it keys the chain of a throw-away benchmark database. Fixed, so a kept database
# (--keep-db) still verifies on the next run.
HMAC_KEY = "bench-audit-hmac-key-not-a-secret"
ADMIN_USERNAME = "bench-auditor"
TIMEOUT = (5, 120)  # (connect, read) for every HTTP request: the script can never hang on one
EXPORT_COLUMNS = (
    "seq, created_at, actor_username, actor_email, action, outcome, key_name, api_key_id, monthly_limit, "
    "manage, completions, source_ip, upstream_status, detail, hash"
)


# --- small helpers ---------------------------------------------------------------------------------
def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class Processes:
    """Subprocesses this script started, stopped by their own pid / process group at exit."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def add(self, name: str, proc: subprocess.Popen) -> subprocess.Popen:
        self.started.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for name, proc in reversed(self.started):
            if proc.poll() is not None:
                continue
            proc.terminate()  # gunicorn: graceful shutdown of its workers
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {proc.pid}) did not stop in 40 s; killing its process group")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


# --- the database ----------------------------------------------------------------------------------
class BenchDatabase:
    """A dedicated PostgreSQL database beside the one the admin URL names. What was seeded into it
    (events, HMAC key fingerprint, seed time) is kept as the database's COMMENT, so --keep-db knows
    whether it can reuse it."""

    def __init__(self, admin_url: str, name: str) -> None:
        parts = urlsplit(admin_url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise SystemExit("--database-url must be a postgres:// URL")
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--database-url must point at a database on this machine (127.0.0.1)")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise SystemExit("--db-name: lower-case letters, digits and underscores only")
        self.admin_url = admin_url
        self.name = name
        self.url = urlunsplit(parts._replace(path="/" + name))

    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True)

    def connect(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def meta(self) -> dict | None:
        """The seeding record of an existing database, or None (no database, or never finished)."""
        with self._admin() as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [self.name]
            ).fetchone()
        if not row or not row[0]:
            return None
        try:
            return json.loads(row[0])
        except ValueError:
            return None

    def set_meta(self, meta: dict) -> None:
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(self.name), sql.Literal(json.dumps(meta, sort_keys=True))
                )
            )

    def recreate(self) -> None:
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def drop(self) -> None:
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        log(f"dropped database {self.name}")

    def server_info(self) -> dict:
        names = ("shared_buffers", "work_mem", "effective_cache_size", "random_page_cost", "jit", "autovacuum")
        names += ("synchronous_commit", "fsync", "max_parallel_workers_per_gather")
        with self.connect() as conn:
            info = {"version": conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]}
            for name in names:
                info[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # noqa: S608 -- fixed names
        return info

    def table_info(self) -> dict:
        with self.connect() as conn:
            count, head = conn.execute("SELECT count(*), max(seq) FROM keys_auditevent").fetchone()
            table = conn.execute("SELECT pg_relation_size('keys_auditevent')").fetchone()[0]
            total = conn.execute("SELECT pg_total_relation_size('keys_auditevent')").fetchone()[0]
            indexes = conn.execute(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), pg_relation_size(i.indexrelid) "
                "FROM pg_index i WHERE i.indrelid = 'keys_auditevent'::regclass ORDER BY 1"
            ).fetchall()
        mb = 1024 * 1024
        return {
            "events": count,
            "head_seq": head,
            "table_mb": round(table / mb, 1),
            "total_mb": round(total / mb, 1),
            "indexes": [
                {"name": n, "definition": d.split(" USING ", 1)[-1], "mb": round(s / mb, 1)} for n, d, s in indexes
            ],
        }


# --- environment, manage.py ------------------------------------------------------------------------
def portal_env(db_url: str, static_root: Path, workdir: Path, secret_key: str) -> dict[str, str]:
    """A production configuration, minus what needs TLS on a loopback run."""
    env = dict(os.environ)
    for name in ("PORTAL_SANDBOX_FORCE", "CACHE_URL", "EMAIL_URL", "CSRF_TRUSTED_ORIGINS", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    env.update(
        {
            "DEBUG": "false",
            "PORTAL_SANDBOX": "false",
            "SECRET_KEY": secret_key,
            "REQUESTY_ADMIN_TOKEN": "bench-unused-admin-token",
            "REQUESTY_BASE_URL": "http://127.0.0.1:9",  # never called: no mint happens here
            "AUDIT_HMAC_KEY": HMAC_KEY,
            "DATABASE_URL": db_url,
            "ALLOWED_HOSTS": "testserver,127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
            "STATIC_ROOT": str(static_root),
            "PYTHONUNBUFFERED": "1",
            # gunicorn (25.1+) opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl, else
            # ~/.gunicorn/gunicorn.ctl, unlinking whatever is there: keep ours private to this run.
            "XDG_RUNTIME_DIR": str(workdir),
        }
    )
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def seed(env: dict[str, str], events: int, timeout: float) -> float:
    """manage.py seed_audit --events N, with its progress relayed every ~10%; returns seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "seed_audit", "--events", str(events), "--benchmark-database"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    buffered, reported, deadline = b"", 0, time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"seed_audit did not finish in {timeout:.0f} s")
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                buffered = (buffered + os.read(proc.stdout.fileno(), 65536))[-200:]
                done = re.findall(rb"(\d+)/\d+ events", buffered)
                if done and int(done[-1]) >= reported + max(events // 10, 1):
                    reported = int(done[-1])
                    log(f"  seeded {reported}/{events} after {time.perf_counter() - started:.0f} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"seed_audit failed ({proc.returncode}):\n{proc.stderr.read().decode()[-3000:]}")
    return elapsed


# --- part 1: pages, in process ----------------------------------------------------------------------
def setup_django(env: dict[str, str]) -> None:
    os.environ.update({k: v for k, v in env.items() if k not in ("XDG_RUNTIME_DIR",)})
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def ensure_superuser(password: str):
    from django.contrib.auth.models import User

    user = User.objects.filter(username=ADMIN_USERNAME).first()
    if user is None:
        user = User.objects.create_superuser(ADMIN_USERNAME, "bench-auditor@example.com", password)
    else:
        user.set_password(password)
        user.is_superuser = user.is_active = user.is_staff = True
        user.save()
    return user


def page_list(head_seq: int, client) -> list[dict]:
    """The pages issue 3 names (target=True) and a few more that show what other filters cost."""
    today = datetime.now(UTC).date()
    since = (today - timedelta(days=182)).replace(day=1)
    until = since + timedelta(days=30)
    month = {"actor": "user0042", "since": since.isoformat(), "until": until.isoformat()}
    # The filtered view's "Older ›" link: its oldest row's seq, taken from the rendered pager.
    first = client.get("/audit/?" + urlencode(month))
    older = re.search(rb"before=(\d+)", first.content)
    from portal.audit.models import AuditEvent

    middle = AuditEvent.objects.filter(seq__lte=head_seq // 2).order_by("-seq").values_list("api_key_id", "seq")[0]
    rare = middle[0][:8]  # 8 hex digits of one key id: matches about one event in 4 billion
    mid = head_seq // 2
    pages = [
        ("first", "/audit/", True, False),
        ("filtered (actor + month)", "/audit/?" + urlencode(month), True, False),
        ("last (?last=1)", "/audit/?last=1", True, False),
        (f"middle (?before={mid})", f"/audit/?before={mid}", True, False),
        # The same page with every sequential scan starting at block 0 (see scan_start below).
        (f"middle (?before={mid}), seq scans from block 0", f"/audit/?before={mid}", True, True),
    ]
    pages += [
        (f"second (?before={head_seq - 49})", f"/audit/?before={head_seq - 49}", False, False),
        (
            f"filtered, older (?before={older.group(1).decode()})",
            "/audit/?" + urlencode(month) + f"&before={older.group(1).decode()}",
            False,
            False,
        )
        if older
        else None,
        ("filtered, oldest (&last=1)", "/audit/?" + urlencode({**month, "last": 1}), False, False),
        ("action=mint.denied", "/audit/?action=mint.denied", False, False),
        (f"q={rare} (key id search, ~1 match)", "/audit/?" + urlencode({"q": rare}), False, False),
    ]
    out = []
    for entry in pages:
        if entry is None:
            continue
        name, url, target, cold = entry
        out.append({"name": name, "url": url, "htmx": False, "target": target, "cold": cold})
        if target and not cold:
            out.append({"name": name + " [htmx]", "url": url, "htmx": True, "target": True, "cold": False})
    return out


@contextmanager
def scan_start(page: dict):
    """For the "from block 0" variant: PostgreSQL's synchronized scans let a sequential scan of a
    large table start where the last one got to, so a repeated query can look cheaper than its
    first run. Turned off in this session, outside the timed window, to time the first run."""
    if not page.get("cold"):
        yield
        return
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET synchronize_seqscans = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronize_seqscans")


def _get(client, page: dict):
    headers = {"HTTP_HX_REQUEST": "true"} if page["htmx"] else {}
    response = client.get(page["url"], **headers)
    if response.status_code != 200:
        raise RuntimeError(f"{page['url']}: HTTP {response.status_code}")
    return response


_SCAN = re.compile(
    r"(Index Only Scan Backward|Index Only Scan|Index Scan Backward|Index Scan|Bitmap Index Scan|Bitmap Heap Scan|"
    r"Seq Scan|Parallel Seq Scan)(?: using (\S+))?(?: on (\S+))?"
)


def query_kind(sql: str) -> str:
    s = sql.lstrip().upper()
    if "PG_ADVISORY_XACT_LOCK" in s:
        return "append: advisory lock"
    if s.startswith("INSERT") and "KEYS_AUDITEVENT" in s:
        return "append: insert"
    if "DJANGO_SESSION" in s:
        return "session"
    if '"AUTH_USER"' in s and "KEYS_AUDITEVENT" not in s:
        return "user"
    if s in ("BEGIN", "COMMIT", "ROLLBACK") or s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
        return "transaction"
    if "KEYS_AUDITEVENT" in s:
        if re.match(r'SELECT "KEYS_AUDITEVENT"\."SEQ"( AS "SEQ")?, "KEYS_AUDITEVENT"\."HASH"', s) and "LIMIT 1" in s:
            return "append: chain head"
        if 'SELECT 1 AS "A"' in s:
            return "page: exists (pager link)"
        return "page: rows"
    return "other"


def explain(sql: str) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    scans = [" ".join(p for p in (m.group(1), m.group(2) and f"using {m.group(2)}") if p) for m in _SCAN.finditer(plan)]
    removed = sum(int(x) for x in re.findall(r"Rows Removed by Filter: (\d+)", plan))
    execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
    top_buffers = re.search(r"Buffers: ([^\n]+)", plan)
    return {
        "scans": scans,
        "rows_removed_by_filter": removed,
        "execution_ms": float(execution.group(1)) if execution else None,
        "buffers": top_buffers.group(1).strip() if top_buffers else None,
        "plan": plan,
    }


def measure_pages(args, head_seq: int, user) -> dict:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from portal.audit import views as audit_views

    client = Client()
    client.force_login(user)
    pages = page_list(head_seq, client)

    log(f"pages: {len(pages)} x ({args.warmup} warm-ups + {args.reps} timed), round-robin")
    for _ in range(args.warmup):
        for page in pages:
            with scan_start(page):
                _get(client, page)
    times: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)  # this thread's CPU: Python's share, not PostgreSQL's
    sizes: dict[str, int] = {}
    for _ in range(args.reps):
        for page in pages:
            with scan_start(page):
                started, cpu_started = time.perf_counter(), time.thread_time()
                response = _get(client, page)
                times[page["name"]].append(time.perf_counter() - started)
                cpu[page["name"]].append(time.thread_time() - cpu_started)
            sizes[page["name"]] = len(response.content)

    # Breakdown pass: the view's three parts timed by wrapping the module globals it calls (the
    # app's code is untouched on disk), and every SQL statement timed by an execute wrapper.
    log(f"pages: breakdown pass ({args.breakdown_reps} per page)")
    parts = ("keyset_page", "_record", "render")
    spent: dict[str, float] = defaultdict(float)
    originals = {name: getattr(audit_views, name) for name in parts}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - t0

        return wrapper

    sql_time: dict[str, float] = defaultdict(float)

    def sql_timer(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_time["all"] += time.perf_counter() - t0
            sql_time["append" if query_kind(sql).startswith("append") else "other"] += time.perf_counter() - t0

    breakdown_samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    try:
        for name in parts:
            setattr(audit_views, name, timed(name, originals[name]))
        with connection.execute_wrapper(sql_timer):
            for _ in range(args.breakdown_reps):
                for page in pages:
                    with scan_start(page):
                        spent.clear()
                        sql_time.clear()
                        started = time.perf_counter()
                        _get(client, page)
                        total = time.perf_counter() - started
                    sample = breakdown_samples[page["name"]]
                    sample["total"].append(total)
                    for name in parts:
                        sample[name].append(spent[name])
                    sample["rest"].append(total - sum(spent[name] for name in parts))
                    sample["sql_all"].append(sql_time["all"])
                    sample["sql_append"].append(sql_time["append"])
    finally:
        for name in parts:
            setattr(audit_views, name, originals[name])

    log("pages: queries and EXPLAIN (ANALYZE, BUFFERS)")
    results = []
    for page in pages:
        with scan_start(page):
            with CaptureQueriesContext(connection) as ctx:
                _get(client, page)
            queries = [{"kind": query_kind(q["sql"]), "sql": q["sql"]} for q in ctx.captured_queries]
            explains = []
            for q in queries:
                if q["kind"].startswith("page") or q["kind"] == "append: chain head":
                    explains.append({"kind": q["kind"], "sql": q["sql"], **explain(q["sql"])})
        b = breakdown_samples[page["name"]]
        results.append(
            {
                **page,
                **ms_summary(times[page["name"]]),
                "python_cpu_p50_ms": round(statistics.median(cpu[page["name"]]) * 1000, 2),
                "bytes": sizes[page["name"]],
                "breakdown_p50_ms": {
                    "total": round(statistics.median(b["total"]) * 1000, 2),
                    "page_queries (keyset_page)": round(statistics.median(b["keyset_page"]) * 1000, 2),
                    "audit.viewed append (_record)": round(statistics.median(b["_record"]) * 1000, 2),
                    "render": round(statistics.median(b["render"]) * 1000, 2),
                    "rest (middleware, session, user, form)": round(statistics.median(b["rest"]) * 1000, 2),
                    "sql, all statements": round(statistics.median(b["sql_all"]) * 1000, 2),
                    "sql, append statements": round(statistics.median(b["sql_append"]) * 1000, 2),
                },
                "query_count": len(queries),
                "queries": queries,
                "explain": explains,
            }
        )
    return {"pages": results, "reps": args.reps, "warmup": args.warmup}


def measure_export_inprocess(head_seq: int) -> dict:
    """The export generators without HTTP: ORM batches only, then CSV and JSON Lines formatting."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from portal.audit import views as audit_views

    out = {}

    def base():
        return audit_views.filtered({}).filter(seq__lte=head_seq)

    # The batch query, as the export issues it (the second batch: both cursors in place).
    with CaptureQueriesContext(connection) as ctx:
        rows = audit_views._export_rows(base())
        for _ in range(audit_views.EXPORT_BATCH + 1):
            next(rows)
        rows.close()
    batch_sql = ctx.captured_queries[-1]["sql"]
    out["batch_query"] = {"sql": batch_sql, **explain(batch_sql)}

    for label, make in (
        ("rows (ORM batches, dicts)", lambda: audit_views._export_rows(base())),
        ("csv lines", lambda: audit_views._csv_lines(audit_views._export_rows(base()))),
        ("jsonl lines", lambda: audit_views._jsonl_lines(audit_views._export_rows(base()))),
    ):
        log(f"export in process: {label}")
        started, cpu, n, size = time.perf_counter(), time.process_time(), 0, 0
        for item in make():
            n += 1
            if isinstance(item, str):
                size += len(item)
        out[label] = {
            "items": n,
            "chars": size or None,
            "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
            "items_per_s": round(n / (time.perf_counter() - started)),
        }
    return out


# --- part 2: gunicorn, export memory --------------------------------------------------------------
def start_portal(procs: Processes, env: dict[str, str], base: str, workdir: Path) -> tuple[subprocess.Popen, Path]:
    logfile = workdir / "gunicorn.log"
    out = open(logfile, "wb")  # noqa: SIM115 -- lives as long as the process
    proc = procs.add(
        "gunicorn",
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    )
    client = new_client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{logfile.read_text()[-3000:]}")
        try:
            if client.get(f"{base}/healthz", timeout=(1, 5)).status_code == 200:
                return proc, logfile
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"/healthz never answered 200; see {logfile}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def reset_peak(pid: int) -> bool:
    """Reset the kernel's VmHWM of a process we own (proc(5): clear_refs, value 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def sign_in(base: str, username: str, password: str) -> requests.Session:
    client = new_client()
    page = client.get(f"{base}/accounts/login/", timeout=TIMEOUT)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    if not token:
        raise RuntimeError("no CSRF token on the login page")
    response = client.post(
        f"{base}/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1), "next": ""},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    if response.status_code != 302:
        raise RuntimeError(f"sign-in as {username} failed: HTTP {response.status_code}")
    return client


def http_pages(client: requests.Session, base: str, pages: list[dict], warmup: int, reps: int) -> dict:
    """The target pages over HTTP: client wall time (loopback, keep-alive)."""
    timed: dict[str, list[float]] = defaultdict(list)
    for i in range(warmup + reps):
        for page in pages:
            headers = {"HX-Request": "true"} if page["htmx"] else {}
            started = time.perf_counter()
            response = client.get(base + page["url"], headers=headers, timeout=TIMEOUT)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{page['url']} over HTTP: {response.status_code}")
            if i >= warmup:
                timed[page["name"]].append(elapsed)
    return {name: ms_summary(values) for name, values in timed.items()}


_ACCESS = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d{3}) \S+ (\d+)ms')


def gunicorn_request_ms(logfile: Path, pages: list[dict], skip: int) -> dict:
    """gunicorn's own request time (%(M)s in gunicorn.conf.py's access_log_format) per page URL;
    htmx and full variants share a URL, so they are reported together."""
    seen: dict[str, list[float]] = defaultdict(list)
    for line in logfile.read_text(errors="replace").splitlines():
        m = _ACCESS.search(line)
        if m and m.group(2) == "200":
            seen[m.group(1)].append(int(m.group(3)) / 1000)
    out = {}
    for page in pages:
        if page["htmx"]:
            continue
        values = seen.get(page["url"], [])[skip * 2 :]  # warm-ups of both variants come first
        out[page["name"]] = ms_summary(values)
    return out


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop.is_set():
            kb = status_kb(self.pid, "VmRSS")
            if kb is not None:
                self.samples.append((time.perf_counter() - t0, kb))
            self.stop.wait(self.interval)


def stream_export(client: requests.Session, base: str, worker: int, fmt: str) -> dict:
    peak_reset = reset_peak(worker)
    baseline = status_kb(worker, "VmRSS")
    cpu0, client_cpu0 = cpu_seconds(worker), time.process_time()
    sampler = RssSampler(worker)
    sampler.start()
    started = time.perf_counter()
    nbytes = newlines = 0
    ttfb = headers_at = None
    last = b""
    try:
        with client.get(f"{base}/audit/export.{fmt}", stream=True, timeout=TIMEOUT) as response:
            headers_at = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"export.{fmt}: HTTP {response.status_code}")
            # urllib3 hands over chunked bodies one HTTP chunk at a time (at most chunk_size bytes).
            for chunk in response.iter_content(chunk_size=1 << 16):
                if ttfb is None:
                    ttfb = time.perf_counter() - started
                nbytes += len(chunk)
                newlines += chunk.count(b"\n")
                last = chunk[-1:] or last
            content_type = response.headers.get("Content-Type")
            disposition = response.headers.get("Content-Disposition")
    finally:
        total = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
    time.sleep(0.3)
    after = status_kb(worker, "VmRSS")
    hwm = status_kb(worker, "VmHWM") if peak_reset else None
    peak_sampled = max((kb for _, kb in sampler.samples), default=None)
    rows = newlines - 1 if fmt == "csv" else newlines  # CSV: a header line; no field holds a newline here
    mb = 1024
    return {
        "format": fmt,
        "content_type": content_type,
        "content_disposition": disposition,
        "bytes": nbytes,
        "mb": round(nbytes / 1e6, 1),
        "rows": rows,
        "ends_with_newline": last == b"\n",
        "headers_s": round(headers_at, 3),
        "ttfb_s": round(ttfb, 3),
        "total_s": round(total, 2),
        "rows_per_s": round(rows / total),
        "mb_per_s": round(nbytes / 1e6 / total, 1),
        "worker_cpu_s": round(cpu_seconds(worker) - cpu0, 2),
        "client_cpu_s": round(time.process_time() - client_cpu0, 2),
        "rss_baseline_mb": round(baseline / mb, 1),
        "rss_peak_sampled_mb": round(peak_sampled / mb, 1),
        "rss_peak_kernel_mb": round(hwm / mb, 1) if hwm else None,
        "rss_after_mb": round(after / mb, 1),
        "growth_sampled_mb": round((peak_sampled - baseline) / mb, 1),
        "growth_kernel_mb": round((hwm - baseline) / mb, 1) if hwm else None,
        "samples": len(sampler.samples),
        "rss_curve_mb": _curve(sampler.samples, total),
    }


def _curve(samples: list[tuple[float, int]], total: float, points: int = 10) -> list[list[float]]:
    """RSS at 10 evenly spaced moments of the export: enough to see a trend in the report."""
    if not samples:
        return []
    out = []
    for i in range(points + 1):
        t = total * i / points
        nearest = min(samples, key=lambda s: abs(s[0] - t))
        out.append([round(nearest[0], 1), round(nearest[1] / 1024, 1)])
    return out


def exported_rows_expected(db: BenchDatabase) -> list[tuple[int, int]]:
    """Per export (oldest first): (its audit.exported event's seq, how many events are older)."""
    with db.connect() as conn:
        marks = conn.execute(
            "SELECT seq FROM keys_auditevent WHERE action = 'audit.exported' AND actor_username = %s ORDER BY seq",
            [ADMIN_USERNAME],
        ).fetchall()
        return [
            (m, conn.execute("SELECT count(*) FROM keys_auditevent WHERE seq < %s", [m]).fetchone()[0])
            for (m,) in marks
        ]


def copy_floor(db: BenchDatabase, below_seq: int) -> dict:
    """PostgreSQL's own CSV of the same columns and rows, through psql: what the database alone costs."""
    query = (
        f"COPY (SELECT {EXPORT_COLUMNS} FROM keys_auditevent WHERE seq < {int(below_seq)} ORDER BY seq DESC) "  # noqa: S608
        "TO STDOUT WITH (FORMAT csv, HEADER)"
    )
    started = time.perf_counter()
    proc = subprocess.Popen(["psql", "-X", "-q", "-d", db.url, "-c", query], stdout=subprocess.PIPE)
    nbytes = newlines = 0
    first = None
    while chunk := proc.stdout.read(1 << 16):
        if first is None:
            first = time.perf_counter() - started
        nbytes += len(chunk)
        newlines += chunk.count(b"\n")
    proc.wait(timeout=600)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"psql COPY failed ({proc.returncode})")
    return {
        "query": query,
        "rows": newlines - 1,
        "bytes": nbytes,
        "mb": round(nbytes / 1e6, 1),
        "ttfb_s": round(first or 0, 3),
        "total_s": round(total, 2),
        "rows_per_s": round((newlines - 1) / total),
    }


# --- report ----------------------------------------------------------------------------------------
def machine_info(db: BenchDatabase, gconf: dict | None) -> dict:
    model = ""
    mem_mb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    import django

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return result.stdout.strip()

    changed = [
        line for line in git("status", "--porcelain").splitlines() if not line[3:].startswith(("bench/", "docs/"))
    ]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_app_changes": changed,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "ram_mb": mem_mb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": db.server_info(),
        "gunicorn": gconf,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_report(r: dict, show_plans: bool) -> None:
    m = r["machine"]
    pg = m["postgresql"]
    print()
    print("Machine")
    print(f"  {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_mb']} MB RAM; {m['platform']}")
    print(f"  Python {m['python']}, Django {m['django']}; {pg['version']}")
    dirty = f", uncommitted changes outside bench/ and docs/: {len(m['uncommitted_app_changes'])} files"
    print(f"  Portal at commit {m['commit']}{dirty if m['uncommitted_app_changes'] else ' (clean)'}")
    print(
        f"  PostgreSQL: shared_buffers {pg['shared_buffers']}, work_mem {pg['work_mem']}, "
        f"random_page_cost {pg['random_page_cost']}, jit {pg['jit']}, autovacuum {pg['autovacuum']}, "
        f"synchronous_commit {pg['synchronous_commit']}"
    )
    print(
        f"  Load average at start {m['load_average_at_start']}, before pages {r['pages'].get('load_average_before')}, "
        f"before exports {r.get('load_average_before_exports')}, at end {m.get('load_average_at_end')}"
    )

    s = r["seed"]
    t = r["table"]
    print()
    print("Data")
    how = "this run" if s["this_run"] else "an earlier run (--keep-db)"
    print(
        f"  seed_audit --events {s['events']}: {_f(s['seconds'], 0)} s ({_f(s['events_per_s'], 0)} events/s, {how}); "
        f"{s['maintenance']}: {_f(s['maintenance_s'], 1)} s"
    )
    print(
        f"  keys_auditevent: {t['events']} rows (head #{t['head_seq']}), table {t['table_mb']} MB, "
        f"with indexes {t['total_mb']} MB"
    )
    for idx in t["indexes"]:
        print(f"    {idx['name']:45} {idx['mb']:>7} MB  {idx['definition']}")

    p = r["pages"]
    print()
    print(f"Pages, server time in process (django.test.Client; {p['warmup']} warm-ups, {p['reps']} timed, round-robin)")
    print(f"  {'page':52} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'CPU p50':>7} {'SQL':>4} {'KB':>5}  <50ms?")
    for x in p["pages"]:
        verdict = ("yes" if x["p50_ms"] < 50 else "NO") if x["target"] else "(not a target)"
        print(
            f"  {x['name'][:52]:52} {_f(x['p50_ms']):>7} {_f(x['p95_ms']):>7} {_f(x['max_ms']):>7} "
            f"{_f(x['python_cpu_p50_ms']):>7} {x['query_count']:>4} {x['bytes'] // 1024:>5}  {verdict}"
        )
    print("  (CPU p50 = this thread's CPU time per request: the Python side only, immune to waiting for a core)")
    print()
    print(f"  Breakdown, medians of {r['config']['breakdown_reps']} more requests per page (ms):")
    print(f"  {'page':52} {'total':>6} {'rows':>6} {'append':>6} {'render':>6} {'rest':>6} {'SQL':>6} {'SQLapp':>6}")
    for x in p["pages"]:
        b = list(x["breakdown_p50_ms"].values())
        print(f"  {x['name'][:52]:52} " + " ".join(f"{v:>6.1f}" for v in b))
    print("  (rows = keyset_page: the page's queries and model instances; append = the audit.viewed event;")
    print("   render = template; rest = middleware, session, user, form; SQL = all statements' time, SQLapp = the")
    print("   append's lock + head + insert, commit not included)")
    print()
    print("  Queries and plans (EXPLAIN ANALYZE, warm cache):")
    for x in p["pages"]:
        if x["htmx"]:
            continue
        kinds = ", ".join(q["kind"] for q in x["queries"])
        print(f"  {x['name']}: {x['query_count']} statements: {kinds}")
        for e in x["explain"]:
            removed = e["rows_removed_by_filter"]
            print(
                f"    {e['kind']:28} {_f(e['execution_ms'], 2):>8} ms  {'; '.join(e['scans'])}"
                + (f"  (rows removed by filter: {removed})" if removed else "")
            )
    if show_plans:
        print()
        print("  Full plans:")
        for x in p["pages"]:
            if x["htmx"]:
                continue
            for e in x["explain"]:
                print(f"  --- {x['name']} / {e['kind']}")
                print("  " + e["sql"])
                print("\n".join("    " + line for line in e["plan"].splitlines()))

    if r.get("http_pages"):
        h = r["http_pages"]
        print()
        print(f"Pages over HTTP (gunicorn, 1 worker x {m['gunicorn']['threads']} threads; {h['reps']} timed)")
        print(f"  {'page':52} {'client p50':>10} {'client p95':>10} {'gunicorn p50':>12}")
        for x in p["pages"]:
            if not x["target"] or x["cold"]:
                continue
            c = h["client"].get(x["name"], {})
            g = h["gunicorn_ms"].get(x["name"].replace(" [htmx]", ""), {})
            print(
                f"  {x['name'][:52]:52} {_f(c.get('p50_ms')):>10} {_f(c.get('p95_ms')):>10} "
                f"{_f(g.get('p50_ms')) if not x['htmx'] else '':>12}"
            )
        print("  (gunicorn's %(M)s is whole milliseconds and covers both variants of a URL)")

    if r.get("exports"):
        print()
        print("Export through gunicorn (one worker; RSS of that worker process)")
        print(
            f"  {'format':7} {'rows':>9} {'MB':>7} {'TTFB s':>7} {'total s':>8} {'rows/s':>8} {'base MB':>8} "
            f"{'peak MB':>8} {'growth':>7} {'HWM grow':>8} {'wCPU s':>7} {'cCPU s':>7}"
        )
        for e in r["exports"]:
            print(
                f"  {e['format']:7} {e['rows']:>9} {e['mb']:>7} {e['ttfb_s']:>7} {e['total_s']:>8} "
                f"{e['rows_per_s']:>8} {e['rss_baseline_mb']:>8} {e['rss_peak_sampled_mb']:>8} "
                f"{e['growth_sampled_mb']:>7} {_f(e['growth_kernel_mb']):>8} {e['worker_cpu_s']:>7} "
                f"{e['client_cpu_s']:>7}"
            )
            print(
                f"    rows expected {e.get('rows_expected')}, complete: {e.get('complete')}; "
                f"RSS over time (s, MB): {e['rss_curve_mb']}"
            )
        print(f"  worker RSS right after start-up + sign-in + page runs: {r.get('worker_rss_before_exports_mb')} MB")
        c = r.get("copy_floor")
        if c:
            print(
                f"  floor, psql COPY ... TO STDOUT WITH CSV: {c['rows']} rows, {c['mb']} MB in {c['total_s']} s "
                f"({c['rows_per_s']} rows/s)"
            )
    if r.get("export_inprocess"):
        x = r["export_inprocess"]
        print()
        print("Export generators in process (no HTTP)")
        for label, v in x.items():
            if label == "batch_query":
                continue
            print(
                f"  {label:28} {v['items']:>9} items in {v['seconds']:>6} s ({v['items_per_s']} /s, "
                f"CPU {v['cpu_seconds']} s)"
            )
        b = x["batch_query"]
        print(f"  batch query (2,000 rows): {_f(b['execution_ms'], 2)} ms, {'; '.join(b['scans'])}")
    v = r.get("verify")
    if v:
        print()
        print(f"verify_audit: {v['message']} in {v['seconds']} s ({v['events_per_s']} events/s)")


# --- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to seed (default 1000000)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN_URL,
        help=f"a PostgreSQL on this machine; the benchmark database is created beside it (default {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--db-name", default="bench_audit", help="the benchmark database (default bench_audit)")
    parser.add_argument("--keep-db", action="store_true", help="reuse a seeded database and keep it afterwards")
    parser.add_argument("--reps", type=int, default=50, help="timed requests per page (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per page first (default 5)")
    parser.add_argument("--breakdown-reps", type=int, default=20, help="requests per page in the breakdown pass")
    parser.add_argument("--http-reps", type=int, default=20, help="timed requests per page over HTTP (0: skip)")
    parser.add_argument("--no-export", action="store_true", help="skip the gunicorn export part")
    parser.add_argument("--no-verify", action="store_true", help="skip manage.py verify_audit")
    parser.add_argument("--no-vacuum", action="store_true", help="plain ANALYZE after seeding, not VACUUM (ANALYZE)")
    parser.add_argument("--no-plans", action="store_true", help="print plan summaries only, not every plan in full")
    parser.add_argument("--seed-timeout", type=float, default=3 * 3600, help="seconds (default 3 h)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (gunicorn log)")
    args = parser.parse_args(argv)
    if args.events < 200 or args.reps < 1 or args.warmup < 0 or args.breakdown_reps < 1 or args.http_reps < 0:
        parser.error("--events must be at least 200; --reps and --breakdown-reps positive")
    return args


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl+C, so the cleanup below stops everything this script started.
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    procs = Processes()
    report: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    fingerprint = hashlib.sha256(HMAC_KEY.encode()).hexdigest()[:16]
    with ExitStack() as cleanup:
        if args.keep_tmp:
            cleanup.callback(log, f"kept {workdir}")
        else:
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

        cleanup.callback(close_django)  # before the drop
        cleanup.callback(procs.stop_all)  # first of all (LIFO)

        env = portal_env(db.url, workdir / "static", workdir, secrets.token_urlsafe(50))
        log("migrate, collectstatic")
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")

        if reuse:
            log(f"reusing {db.name}: seeded with {meta['events']} events on {meta.get('seeded_at')}")
            seed_s, this_run = meta["seed_s"], False
        else:
            log(f"seed_audit --events {args.events} (this takes a while at 1,000,000)")
            seed_s, this_run = seed(env, args.events, args.seed_timeout), True
            db.set_meta(
                {
                    "events": args.events,
                    "hmac": fingerprint,
                    "seed_s": round(seed_s, 1),
                    "seeded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        maintenance = "ANALYZE" if args.no_vacuum else "VACUUM (ANALYZE)"
        log(f"{maintenance} keys_auditevent")
        started = time.perf_counter()
        with db.connect() as conn:
            conn.execute(f"{maintenance} keys_auditevent")
        report["seed"] = {
            "events": args.events,
            "seconds": round(seed_s, 1),
            "events_per_s": round(args.events / seed_s),
            "this_run": this_run,
            "maintenance": maintenance,
            "maintenance_s": round(time.perf_counter() - started, 1),
        }
        report["table"] = db.table_info()
        report["machine"] = machine_info(db, None)

        # Part 1: pages, in this process.
        setup_django(env)
        password = secrets.token_urlsafe(18)
        user = ensure_superuser(password)
        load = [round(x, 2) for x in os.getloadavg()]
        report["pages"] = measure_pages(args, report["table"]["head_seq"], user)
        report["pages"]["load_average_before"] = load

        if not args.no_export:
            report["export_inprocess"] = measure_export_inprocess(report["table"]["head_seq"])

            # Part 2: gunicorn.
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            genv = {
                **env,
                "ALLOWED_HOSTS": "127.0.0.1",
                "WEB_CONCURRENCY": "1",
                "GUNICORN_THREADS": "4",
                "GUNICORN_BIND": f"127.0.0.1:{port}",
            }
            code = (
                "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); print(json.dumps({k: c[k] for k in "
                "('workers', 'threads', 'worker_class', 'timeout', 'max_requests')}))"
            )
            report["machine"]["gunicorn"] = json.loads(
                subprocess.run(
                    [sys.executable, "-c", code], cwd=ROOT, env=genv, capture_output=True, text=True, check=True
                ).stdout
            )
            log(f"gunicorn on {base}")
            master, logfile = start_portal(procs, genv, base, workdir)
            client = sign_in(base, ADMIN_USERNAME, password)
            workers = children(master.pid)
            if len(workers) != 1:
                raise RuntimeError(f"expected one gunicorn worker under {master.pid}, found {workers}")
            worker = workers[0]
            targets = [p for p in report["pages"]["pages"] if p["target"] and not p["cold"]]
            if args.http_reps:
                log(f"pages over HTTP: {len(targets)} x (3 + {args.http_reps})")
                report["http_pages"] = {
                    "reps": args.http_reps,
                    "client": http_pages(client, base, targets, 3, args.http_reps),
                }
            else:
                client.get(f"{base}/audit/", timeout=TIMEOUT)  # the worker has imported everything
            report["worker_rss_before_exports_mb"] = round(status_kb(worker, "VmRSS") / 1024, 1)
            report["load_average_before_exports"] = [round(x, 2) for x in os.getloadavg()]
            exports = []
            for fmt in ("csv", "jsonl"):
                log(f"export.{fmt}: streaming")
                exports.append(stream_export(client, base, worker, fmt))
                log(
                    f"  {exports[-1]['rows']} rows in {exports[-1]['total_s']} s, "
                    f"RSS growth {exports[-1]['growth_sampled_mb']} MB"
                )
            if children(master.pid) != [worker]:
                log("warning: the gunicorn worker changed during the exports")
            for e, (mark, expected) in zip(exports, exported_rows_expected(db)[-len(exports) :], strict=True):
                e["exported_event_seq"] = mark
                e["rows_expected"] = expected
                e["complete"] = e["rows"] == expected and e["ends_with_newline"]
            procs.stop_all()  # flush and close the access log before reading it
            if args.http_reps:
                report["http_pages"]["gunicorn_ms"] = gunicorn_request_ms(logfile, targets, 3)
            problems = [
                line
                for line in logfile.read_text(errors="replace").splitlines()
                if "Traceback" in line or "[ERROR]" in line or '"level": "ERROR"' in line
            ]
            report["gunicorn_problems"] = problems[:20]
            report["exports"] = exports
            log("psql COPY floor")
            report["copy_floor"] = copy_floor(db, exports[0]["exported_event_seq"])

        if not args.no_verify:
            log("verify_audit")
            started = time.perf_counter()
            out = manage(env, "verify_audit", timeout=3600).strip().splitlines()[-1]
            elapsed = time.perf_counter() - started
            count = int(re.match(r"(\d+)", out).group(1)) if re.match(r"\d+", out) else None
            report["verify"] = {
                "message": out,
                "seconds": round(elapsed, 1),
                "events_per_s": round(count / elapsed) if count else None,
            }

        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print_report(report, not args.no_plans)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
            log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; stopped what this script started")
        sys.exit(130)
