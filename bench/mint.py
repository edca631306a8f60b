#!/usr/bin/env python
"""Benchmark the mint path: what the portal itself adds to a mint, and how many mints per second it
completes while Requesty is slow, in a burst and sustained.

A measurement, not a test: it asserts nothing about timings. It prints what it saw (errors by class
included) and leaves judging the numbers to a person; docs/performance.md records a run and reads it.

Everything runs on 127.0.0.1 and is torn down at the end (also on Ctrl+C / SIGTERM):

- the stand-in Requesty (``python -m standin --control``) in its own process, so its threads do not
  share a GIL with this script's client threads; latency is switched through its control API;
- a throw-away database: an SQLite file in a temporary directory (default), or a dedicated
  PostgreSQL database created beside the one ``--database-url`` names and dropped afterwards;
- the portal under gunicorn exactly as production starts it (``gunicorn -c gunicorn.conf.py``,
  DEBUG off, manifest static files), with only the settings a plain-HTTP loopback run needs relaxed.
  WEB_CONCURRENCY / GUNICORN_THREADS / CONN_MAX_AGE in this script's environment are passed through,
  so other worker/thread settings can be compared without editing gunicorn.conf.py.

Part 1 (overhead): with zero added latency, N sequential creates straight to the stand-in and N
sequential mints through the portal (GET the form for a fresh nonce + CSRF token, then POST it the
way htmx does), interleaved; the difference of the medians is what the portal adds.
Part 2 (slow Requesty): the stand-in answers after --latency seconds; C signed-in users fetch their
forms (untimed), then POST at the same instant; completed mints per second against the ideal C/latency.
Part 3 (sustained): the same latency; C signed-in users each loop GET form -> POST mint without pause
(closed loop) for --settle seconds, then a --duration-second window; mints completed in the window per
second against the ideal C/latency (conservative: each cycle also includes the form GET). With
--start staggered (default) the users start spread evenly over one latency, as independent people
would be; with --start lockstep they all start at the same instant and, the latency being fixed,
stay nearly in step: every cycle is then a burst of C mints at once (part 2's question, repeated).

    .venv/bin/python bench/mint.py [--n 200] [--concurrency 8,16,32] [--rounds 5]
                                   [--duration 20] [--settle 3] [--start staggered|lockstep]
                                   [--part all|overhead|slow|sustained]
                                   [--database-url postgres://postgres@127.0.0.1:5432/postgres]
                                   [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script

from bench._common import free_port, log, new_client, percentile, summary  # noqa: E402

TIMEOUT = (5, 60)  # (connect, read) for every client request: the script can never hang on one
MONTHLY_LIMIT = "10"
USER_PREFIX = "bench-user-"


# --- small helpers ---------------------------------------------------------------------------------
def field(html: str, pattern: str, what: str) -> str:
    match = re.search(pattern, html)
    if not match:
        raise RuntimeError(f"could not find {what} in the page")
    return match.group(1)


# --- the pieces the benchmark starts ----------------------------------------------------------------
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
            proc.terminate()  # gunicorn: graceful shutdown of its workers; stand-in: clean stop
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {proc.pid}) did not stop in 20 s; killing its process group")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


class CpuMeter:
    """CPU seconds used by the portal (gunicorn master + workers), the stand-in and this script, and
    how busy the whole machine was, between two snapshots. On a shared machine, "others" (CPU used
    by processes that are none of these) says how much the numbers were disturbed.

    Workers are found as the master's children and cached; a recycled worker's CPU is lost (rare:
    max_requests is far above what one run sends)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, portal_pid: int, standin_pid: int) -> None:
        self.portal_pid, self.standin_pid = portal_pid, standin_pid
        self.workers = self._children(portal_pid)

    @staticmethod
    def _stat(pid: int | str) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    def _children(self, parent: int) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if int(self._stat(entry)[1]) == parent:
                        found.append(int(entry))
                except (OSError, IndexError, ValueError):
                    continue
        return found

    def _cpu(self, pid: int | str) -> float:
        fields = self._stat(pid)
        return (int(fields[11]) + int(fields[12])) / self.TICK  # utime + stime, all threads

    def portal(self) -> float:
        try:
            return sum(self._cpu(pid) for pid in [self.portal_pid, *self.workers])
        except OSError:  # a worker was recycled: find the current ones
            self.workers = self._children(self.portal_pid)
            return sum(self._cpu(pid) for pid in [self.portal_pid, *self.workers])

    @classmethod
    def machine(cls) -> tuple[float, float]:
        """(busy, total) CPU seconds of the whole machine since boot, all CPUs."""
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields) - idle) / cls.TICK, sum(fields) / cls.TICK

    def snapshot(self) -> dict:
        busy, total = self.machine()
        return {
            "portal": self.portal(),
            "standin": self._cpu(self.standin_pid),
            "bench": self._cpu("self"),
            "busy": busy,
            "total": total,
        }

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        d = {k: b[k] - a[k] for k in a}
        capacity = d["total"] or 1e-9
        return {
            "portal_cpu_s": round(d["portal"], 3),
            "standin_cpu_s": round(d["standin"], 3),
            "bench_cpu_s": round(d["bench"], 3),
            "machine_busy_pct": round(100 * d["busy"] / capacity, 1),
            "others_pct": round(100 * max(0.0, d["busy"] - d["portal"] - d["standin"] - d["bench"]) / capacity, 1),
        }


class BusySampler:
    """The whole machine's CPU use sampled every 20 ms during a round, so the busy share can be
    computed for a sub-window: from the first POST to the last Requesty call. Averaged over the
    whole round it would be diluted by the second in which everyone just waits for Requesty."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BusySampler:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), *CpuMeter.machine()))
            if self._stop.wait(0.02):
                self.samples.append((time.time(), *CpuMeter.machine()))
                return

    def busy_pct(self, start: float, end: float) -> float | None:
        """Machine CPU use (% of all CPUs) between the samples enclosing [start, end]."""
        before = [x for x in self.samples if x[0] <= start]
        after = [x for x in self.samples if x[0] >= end]
        if not before or not after or after[0][2] <= before[-1][2]:
            return None
        a, b = before[-1], after[0]
        return round(100 * (b[1] - a[1]) / (b[2] - a[2]), 1)


class LockSampler:
    """PostgreSQL only: samples pg_stat_activity every 10 ms while the POSTs run and keeps the
    largest number of the portal's sessions seen waiting on a lock at once, by kind (advisory:
    the per-user mint lock or the audit chain's append lock; transactionid/tuple: row locks)."""

    def __init__(self, db: Database) -> None:
        import psycopg

        self.conn = psycopg.connect(db.url, autocommit=True) if db.vendor == "postgresql" else None
        self.peak: Counter[str] = Counter()
        self.busiest = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LockSampler:
        if self.conn is not None:
            self.peak, self.busiest = Counter(), 0
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        query = (
            "SELECT coalesce(wait_event, '?'), count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' "
            "GROUP BY 1"
        )
        while not self._stop.is_set():
            rows = self.conn.execute(query).fetchall()
            for kind, n in rows:
                self.peak[kind] = max(self.peak[kind], n)
            self.busiest = max(self.busiest, sum(n for _, n in rows))
            self._stop.wait(0.01)

    def result(self) -> dict | None:
        if self.conn is None:
            return None
        return {"max_waiting": self.busiest, "max_waiting_by_kind": dict(self.peak)}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def start_standin(procs: Processes, token: str, workdir: Path) -> tuple[str, int]:
    env = {**os.environ, "STANDIN_ADMIN_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    stderr = open(workdir / "standin.log", "wb")  # noqa: SIM115 -- lives as long as the process
    proc = procs.add(
        "stand-in",
        subprocess.Popen(
            [sys.executable, "-m", "standin", "--host", "127.0.0.1", "--port", "0", "--control"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        ),
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().decode()
            match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if match:
                return match.group(1), proc.pid
        if proc.poll() is not None:
            break
    raise RuntimeError(f"the stand-in did not start; see {workdir / 'standin.log'}")


def set_latency(standin_url: str, seconds: float) -> None:
    response = new_client().post(f"{standin_url}/_standin/latency", json={"seconds": seconds}, timeout=TIMEOUT)
    if response.status_code != 204:
        raise RuntimeError(f"stand-in refused the latency change: HTTP {response.status_code}")


def standin_key_count(standin_url: str) -> int:
    return len(new_client().get(f"{standin_url}/_standin/state", timeout=TIMEOUT).json()["keys"])


def upstream_stamps(standin_url: str) -> dict[str, float]:
    """When the stand-in created each key (epoch seconds), by the name the portal was given. The
    stand-in sleeps its latency first and then stamps `created_at`, so for one mint
    `created_at - latency - POST start` is the portal's time before its Requesty call (queueing,
    session, validation, policy, the first transaction) and `POST end - created_at` the time after
    it (second transaction, rendering, transfer)."""
    keys = new_client().get(f"{standin_url}/_standin/state", timeout=TIMEOUT).json()["keys"]
    return {
        key["name"].split(" [portal:")[0]: datetime.fromisoformat(key["created_at"].replace("Z", "+00:00")).timestamp()
        for key in keys
    }


def split_at_upstream(mints: list[tuple[str, float, float]], stamps: dict[str, float], latency: float) -> dict:
    """(name, start, end) wall-clock times of successful mints -> before/after-Requesty seconds."""
    before, after = [], []
    for name, start, end in mints:
        if name in stamps:
            before.append(stamps[name] - latency - start)
            after.append(end - stamps[name])
    return {"before": before, "after": after}


class Database:
    """SQLite file in the temp dir, or a dedicated PostgreSQL database created and dropped here."""

    def __init__(self, url: str | None, workdir: Path, sqlite_init: str | None = None) -> None:
        self.admin_url = url
        self.pg_name = None
        if url is None:
            self.url = f"sqlite:///{workdir / 'bench.sqlite3'}"  # absolute path: sqlite:////tmp/...
            self.vendor = "sqlite"
            self.version = f"SQLite {sqlite3.sqlite_version}"
            if sqlite_init:  # django-environ turns query parameters into OPTIONS
                self.url += "?" + urlencode({"init_command": sqlite_init}, quote_via=quote)
                self.version += f" (init_command: {sqlite_init})"
            return
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise SystemExit("--database-url must be a postgres:// URL (SQLite is the default)")
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--database-url must point at a database on this machine (127.0.0.1)")
        import psycopg
        from psycopg import sql

        self.vendor = "postgresql"
        self.pg_name = f"bench_portal_{os.getpid()}"
        with psycopg.connect(url, autocommit=True) as conn:
            self.version = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.pg_name)))
        self.url = urlunsplit(parts._replace(path="/" + self.pg_name))

    def drop(self) -> None:
        if not self.pg_name:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.pg_name)))

    @property
    def label(self) -> str:
        return self.version if self.vendor == "sqlite" else f"{self.version} (database {self.pg_name})"


def portal_env(db: Database, standin_url: str, token: str, bind: str, workdir: Path) -> dict[str, str]:
    """A production configuration, minus what needs TLS on a loopback run."""
    env = dict(os.environ)
    for name in ("PORTAL_SANDBOX_FORCE", "CACHE_URL", "EMAIL_URL", "CSRF_TRUSTED_ORIGINS"):
        env.pop(name, None)
    env.update(
        {
            "DEBUG": "false",
            "PORTAL_SANDBOX": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": db.url,
            "REQUESTY_BASE_URL": standin_url,  # http:// on loopback: only a deploy-check warning
            "REQUESTY_ADMIN_TOKEN": token,
            "AUDIT_HMAC_KEY": secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "GUNICORN_BIND": bind,
            "LOG_LEVEL": "WARNING",
            "PORTAL_MAX_MONTHLY_LIMIT": "100",
            # One bench user mints --n keys in part 1, every user up to --rounds per level in part 2
            # and one per cycle (~--settle + --duration seconds / cycle) per level in part 3, all
            # within the hour: lift the per-user caps and the hourly rate limit far above that so
            # they never refuse (1e6 keys/mints, $1e9 = 1e8 keys at MONTHLY_LIMIT). The checks still
            # run, so their queries are measured.
            "PORTAL_MAX_ACTIVE_KEYS": "1000000",
            "PORTAL_MINTS_PER_HOUR": "1000000",
            "PORTAL_MAX_TOTAL_MONTHLY_LIMIT": "1000000000",
            "STATIC_ROOT": str(workdir / "static"),
            "PYTHONUNBUFFERED": "1",
            # gunicorn (25.1+) opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl, else
            # ~/.gunicorn/gunicorn.ctl, unlinking whatever is there: keep ours private to this run.
            "XDG_RUNTIME_DIR": str(workdir),
        }
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


CREATE_USERS = """
import os
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
encoded = make_password(os.environ["BENCH_PASSWORD"])  # hashed once: the users differ only by name
User.objects.bulk_create(
    User(username=f"{os.environ['BENCH_PREFIX']}{i}", email=f"bench{i}@example.com", password=encoded)
    for i in range(int(os.environ["BENCH_USERS"]))
)
"""

ISSUANCE_STATES = """
import json
from django.db.models import Count
from portal.audit.models import AuditEvent
from keys.models import Issuance, IssuedKey
print(json.dumps({
    "issuances": dict(Issuance.objects.values_list("state").annotate(n=Count("id")).order_by()),
    "issued_keys": IssuedKey.objects.count(),
    "audit_events": AuditEvent.objects.count(),
}))
"""


def gunicorn_settings(env: dict[str, str]) -> dict:
    """What gunicorn.conf.py resolves to under this environment (no defaults duplicated here)."""
    code = (
        "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps({k: c[k] for k in ('workers', 'threads', 'worker_class', 'timeout', 'keepalive')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout)


def start_portal(procs: Processes, env: dict[str, str], base: str, workdir: Path) -> tuple[Path, int]:
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
    workers = gunicorn_settings(env)["workers"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{logfile.read_text()[-3000:]}")
        try:
            # Up, and every worker forked, so the CPU meter finds them all.
            booted = logfile.read_text(errors="replace").count("Booting worker with pid")
            if booted >= workers and client.get(f"{base}/healthz", timeout=(1, 5)).status_code == 200:
                return logfile, proc.pid
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"/healthz never answered 200; see {logfile}")


# --- the portal as a browser + htmx use it ---------------------------------------------------------
def sign_in(base: str, username: str, password: str) -> requests.Session:
    client = new_client()
    page = client.get(f"{base}/accounts/login/", timeout=TIMEOUT)
    token = field(page.text, r'name="csrfmiddlewaretoken" value="([^"]+)"', "the login CSRF token")
    response = client.post(
        f"{base}/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token, "next": ""},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    if response.status_code != 302:
        raise RuntimeError(f"sign-in as {username} failed: HTTP {response.status_code}")
    return client


def fetch_form(client: requests.Session, base: str) -> tuple[str, str]:
    """GET /keys/new/ as a browser does: a fresh one-time nonce and the CSRF token from the page."""
    page = client.get(f"{base}/keys/new/", timeout=TIMEOUT)
    if page.status_code != 200:
        raise FormError(f"form GET HTTP {page.status_code}")
    nonce = field(page.text, r'<input[^>]*name="nonce"[^>]*value="([^"]+)"', "the form nonce")
    csrf = field(page.text, r'"x-csrftoken": "([^"]+)"', "the htmx CSRF header")
    return nonce, csrf


class FormError(Exception):
    pass


def post_mint(client: requests.Session, base: str, form: tuple[str, str], name: str) -> requests.Response:
    """POST the form the way htmx 2 sends it (hx-post on the form, hx-headers from <body>)."""
    nonce, csrf = form
    return client.post(
        f"{base}/keys/new/",
        data={
            "csrfmiddlewaretoken": csrf,
            "nonce": nonce,
            "name": name,
            "monthly_limit": MONTHLY_LIMIT,
            "manage": "none",
            "completions": "write",
        },
        headers={
            "HX-Request": "true",
            "HX-Target": "mint",
            "HX-Current-URL": f"{base}/keys/new/",
            "X-CSRFToken": csrf,
        },
        timeout=TIMEOUT,
    )


_ALERT = re.compile(r'role="alert"[^>]*>\s*(?:<p>)?([^<]{1,200})')


def classify(response: requests.Response) -> str:
    """'ok', or a short class for anything else: status plus what the portal told the user."""
    body = response.text
    status = response.status_code
    if status == 200 and "data-secret" in body:
        return "ok"
    message = _ALERT.search(body)
    text = " ".join(message.group(1).split())[:90] if message else ""
    if status == 503 and "database" in text:
        kind = "unavailable (portal database error before minting)"
    elif status == 503 and "could not be recorded" in text:
        kind = "failed (created upstream, record failed, compensated)"
    elif status == 202:
        kind = "unknown outcome (Requesty timeout/5xx)"
    elif status == 409:
        kind = "duplicate nonce"
    elif status == 403 and "CSRF" in body:
        kind = "CSRF failure"
    elif status == 500:
        kind = "server error (unhandled exception)"
    else:
        kind = text or "no message"
    return f"HTTP {status}: {kind}"


def client_error(exc: Exception) -> str:
    """The requests exception and, where there is one, the low-level cause (RemoteDisconnected...)."""
    inner = exc.args[0] if exc.args else None
    cause = getattr(inner, "reason", None)
    if cause is None and isinstance(inner, Exception) and len(inner.args) > 1:
        cause = inner.args[1]  # urllib3 ProtocolError("Connection aborted.", <cause>)
    detail = f" ({type(cause).__name__})" if isinstance(cause, BaseException) else ""
    return f"client {type(exc).__name__}{detail}"


# --- part 1: overhead ----------------------------------------------------------------------------
def direct_create(client: requests.Session, standin_url: str, token: str, name: str) -> requests.Response:
    """The same call the portal's Requesty client makes (same body shape, same name suffix length)."""
    return client.post(
        f"{standin_url}/v1/manage/apikey",
        json={
            "name": f"{name} [portal:000000000000]",
            "monthly_limit": int(MONTHLY_LIMIT),
            "permissions": {"manage": "none", "completions": "write"},
        },
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=TIMEOUT,
    )


def part_overhead(args, base: str, standin_url: str, token: str, client: requests.Session, meter: CpuMeter) -> dict:
    set_latency(standin_url, 0)
    upstream = new_client()
    probe = new_client()
    times: dict[str, list[float]] = {"direct": [], "form": [], "mint": [], "healthz": []}
    cpu = {"form": 0.0, "mint": 0.0}  # portal CPU seconds, summed over the recorded requests
    walls: list[tuple[str, float, float]] = []  # (name, start, end) of successful mints, epoch seconds
    errors: Counter[str] = Counter()

    def one(i: int, record: bool) -> None:
        t0 = time.perf_counter()
        try:
            response = direct_create(upstream, standin_url, token, f"bench-direct-{i}")
            ok = response.status_code == 201
        except requests.RequestException as exc:
            ok, response = False, exc
        t1 = time.perf_counter()
        if record:
            if ok:
                times["direct"].append(t1 - t0)
            else:
                errors[f"direct create: {getattr(response, 'status_code', client_error(response))}"] += 1

        c0 = meter.portal()
        t0 = time.perf_counter()
        try:
            form = fetch_form(client, base)
        except (requests.RequestException, FormError, RuntimeError) as exc:
            if record:
                errors[f"form GET: {exc if isinstance(exc, FormError) else client_error(exc)}"] += 1
            return
        t1 = time.perf_counter()
        c1 = meter.portal()
        w2, t2 = time.time(), time.perf_counter()
        try:
            response = post_mint(client, base, form, f"bench-{i}")
            kind = classify(response)
        except requests.RequestException as exc:
            kind = client_error(exc)
        t3 = time.perf_counter()
        w3 = w2 + (t3 - t2)
        c2 = meter.portal()
        if record:
            times["form"].append(t1 - t0)
            cpu["form"] += c1 - c0
            if kind == "ok":
                times["mint"].append(t3 - t2)
                cpu["mint"] += c2 - c1
                walls.append((f"bench-{i}", w2, w3))
            else:
                errors[f"mint POST: {kind}"] += 1

        t0 = time.perf_counter()
        try:
            healthy = probe.get(f"{base}/healthz", timeout=TIMEOUT).status_code == 200
        except requests.RequestException:
            healthy = False
        t1 = time.perf_counter()
        if record and healthy:
            times["healthz"].append(t1 - t0)

    log(f"part 1: {args.warmup} warm-up iterations, then {args.n} measured (latency 0)")
    for i in range(args.warmup):
        one(-1 - i, record=False)
    before = meter.snapshot()
    for i in range(args.n):
        one(i, record=True)
    machine = CpuMeter.delta(before, meter.snapshot())
    split = split_at_upstream(walls, upstream_stamps(standin_url), 0.0)
    times["mint_before_upstream"], times["mint_after_upstream"] = split["before"], split["after"]
    stats = {name: summary(values) for name, values in times.items()}
    overhead = None
    if stats["mint"]["p50_ms"] is not None and stats["direct"]["p50_ms"] is not None:
        overhead = round(stats["mint"]["p50_ms"] - stats["direct"]["p50_ms"], 2)
    return {
        "stats": stats,
        "overhead_p50_ms": overhead,
        # Mean portal CPU per request (tick-sampled per process, so only meaningful summed over many).
        "portal_cpu_ms": {k: round(1000 * cpu[k] / len(times[k]), 1) if times[k] else None for k in ("form", "mint")},
        "cpu": machine,
        "errors": dict(errors),
    }


# --- part 2: slow Requesty ---------------------------------------------------------------------------
def part_slow(
    args, base: str, standin_url: str, clients: list[requests.Session], meter: CpuMeter, db: Database
) -> dict:
    set_latency(standin_url, args.latency)
    sampler = LockSampler(db)
    results = []
    for c in args.concurrency:
        rounds = []
        for r in range(args.rounds):
            users = clients[:c]
            with ThreadPoolExecutor(max_workers=c) as pool:  # untimed: fresh nonces for everyone
                notes: Counter[str] = Counter()
                prefetch = list(pool.map(lambda cl, notes=notes: _try_form(cl, base, notes), users))
            ready = [(cl, form) for cl, form in zip(users, prefetch, strict=True) if isinstance(form, tuple)]
            form_errors = notes + Counter(f"form GET: {f}" for f in prefetch if not isinstance(f, tuple))
            barrier = threading.Barrier(len(ready)) if ready else None

            def fire(index: int, cl: requests.Session, form: tuple[str, str], c=c, r=r, barrier=barrier):
                barrier.wait(timeout=60)
                name = f"bench-c{c}-r{r}-{index}"
                w0, t0 = time.time(), time.perf_counter()
                try:
                    kind = classify(post_mint(cl, base, form, name))
                except requests.RequestException as exc:
                    kind = client_error(exc)
                t1 = time.perf_counter()
                return t0, t1, kind, name, w0, w0 + (t1 - t0)

            before = meter.snapshot()
            with BusySampler() as busy, sampler, ThreadPoolExecutor(max_workers=max(1, len(ready))) as pool:
                futures = [pool.submit(fire, i, cl, form) for i, (cl, form) in enumerate(ready)]
                outcomes = [f.result() for f in futures]
            cpu = CpuMeter.delta(before, meter.snapshot())
            start = min((o[0] for o in outcomes), default=0.0)
            end = max((o[1] for o in outcomes), default=0.0)
            wall = end - start
            ok = [o for o in outcomes if o[2] == "ok"]
            errors = form_errors + Counter(f"mint POST: {o[2]}" for o in outcomes if o[2] != "ok")
            latencies = sorted(o[1] - o[0] for o in ok)
            stamps = upstream_stamps(standin_url)
            split = split_at_upstream([(o[3], o[4], o[5]) for o in ok], stamps, args.latency)
            b, a = sorted(split["before"]), sorted(split["after"])
            calls = [stamps[o[3]] - args.latency for o in ok if o[3] in stamps]
            busy_before = busy.busy_pct(min(o[4] for o in ok), max(calls)) if calls else None
            rounds.append(
                {
                    "concurrency": c,
                    "round": r + 1,
                    "sent": len(ready),
                    "ok": len(ok),
                    "wall_s": round(wall, 3),
                    "mints_per_s": round(len(ok) / wall, 2) if wall > 0 else 0.0,
                    "latency_p50_s": round(percentile(latencies, 50), 3) if latencies else None,
                    "latency_max_s": round(latencies[-1], 3) if latencies else None,
                    # Took 1.5x the stand-in latency or more: waited for a thread, the CPU or a lock.
                    "waited": sum(1 for x in latencies if x >= 1.5 * args.latency),
                    "before_upstream_p50_s": round(percentile(b, 50), 3) if b else None,
                    "before_upstream_max_s": round(b[-1], 3) if b else None,
                    "after_upstream_p50_s": round(percentile(a, 50), 3) if a else None,
                    "after_upstream_max_s": round(a[-1], 3) if a else None,
                    "portal_cpu_ms_per_mint": round(1000 * cpu["portal_cpu_s"] / len(ok), 1) if ok else None,
                    # Machine CPU use from the first POST until the last mint reached Requesty.
                    "busy_before_upstream_pct": busy_before,
                    "cpu": cpu,
                    "pg_lock_waits": sampler.result(),
                    "errors": dict(errors),
                }
            )
            log(
                f"part 2: C={c} round {r + 1}/{args.rounds}: {len(ok)}/{c} ok in {wall:.2f} s "
                f"({rounds[-1]['mints_per_s']}/s){'; errors ' + str(dict(errors)) if errors else ''}"
            )
        rates = sorted(x["mints_per_s"] for x in rounds)
        all_errors: Counter[str] = Counter()
        for x in rounds:
            all_errors.update(x["errors"])
        ideal = c / args.latency
        results.append(
            {
                "concurrency": c,
                "ideal_per_s": round(ideal, 2),
                "median_per_s": round(percentile(rates, 50), 2),
                "min_per_s": rates[0],
                "max_per_s": rates[-1],
                "efficiency": round(percentile(rates, 50) / ideal, 3),
                "latency_p50_s": percentile([x["latency_p50_s"] for x in rounds if x["latency_p50_s"]], 50),
                "latency_max_s": max((x["latency_max_s"] or 0) for x in rounds),
                "waited": sum(x["waited"] for x in rounds),
                "before_upstream_p50_s": percentile([x["before_upstream_p50_s"] for x in rounds if x["ok"]], 50),
                "before_upstream_max_s": max((x["before_upstream_max_s"] or 0) for x in rounds),
                "after_upstream_p50_s": percentile([x["after_upstream_p50_s"] for x in rounds if x["ok"]], 50),
                "after_upstream_max_s": max((x["after_upstream_max_s"] or 0) for x in rounds),
                "portal_cpu_ms_per_mint": percentile(
                    [x["portal_cpu_ms_per_mint"] for x in rounds if x["portal_cpu_ms_per_mint"]], 50
                ),
                "pg_max_lock_waiters": max((x["pg_lock_waits"] or {}).get("max_waiting", 0) for x in rounds)
                if db.vendor == "postgresql"
                else None,
                "pg_max_lock_waiters_by_kind": _max_by_kind(rounds) if db.vendor == "postgresql" else None,
                "machine_busy_pct": percentile([x["cpu"]["machine_busy_pct"] for x in rounds], 50),
                "busy_before_upstream_pct": percentile(
                    [x["busy_before_upstream_pct"] for x in rounds if x["busy_before_upstream_pct"] is not None], 50
                ),
                "others_pct": percentile([x["cpu"]["others_pct"] for x in rounds], 50),
                "ok": sum(x["ok"] for x in rounds),
                "sent": sum(x["sent"] for x in rounds),
                "errors": dict(all_errors),
                "rounds": rounds,
            }
        )
    sampler.close()
    return {"latency_s": args.latency, "results": results}


def _max_by_kind(rounds: list[dict]) -> dict[str, int]:
    peak: Counter[str] = Counter()
    for x in rounds:
        for kind, n in ((x["pg_lock_waits"] or {}).get("max_waiting_by_kind") or {}).items():
            peak[kind] = max(peak[kind], n)
    return dict(peak)


def _try_form(client: requests.Session, base: str, notes: Counter) -> tuple[str, str] | str:
    """The untimed prefetch. A GET that fails on a reused connection (gunicorn closing an idle
    keep-alive connection just as it is reused) is retried once, as browsers do; the retry is
    counted in `notes`, never hidden."""
    for attempt in (1, 2):
        try:
            return fetch_form(client, base)
        except FormError as exc:
            return str(exc)
        except requests.ConnectionError as exc:
            if attempt == 2:
                return client_error(exc)
            notes[f"form GET retried once after {client_error(exc)}"] += 1
        except (requests.RequestException, RuntimeError) as exc:
            return client_error(exc)
    raise AssertionError("unreachable")


# --- part 3: sustained -----------------------------------------------------------------------------
def part_sustained(
    args, base: str, standin_url: str, clients: list[requests.Session], meter: CpuMeter, db: Database
) -> dict:
    set_latency(standin_url, args.latency)
    sampler = LockSampler(db)
    results = []
    for c in args.concurrency:
        users = clients[:c]
        stop = threading.Event()

        def loop(index: int, cl: requests.Session, c=c, stop=stop) -> list[tuple]:
            """One closed-loop user: form GET, mint POST, again, until told to stop; an iteration
            that has started always finishes. Returns (GET start, GET end, POST start, POST end,
            class, retry notes) per iteration, perf_counter seconds; POST times None if the GET
            failed."""
            done = []
            i = 0
            if args.start == "staggered":  # user k starts k/C of a latency in
                stop.wait(index * args.latency / c)
            while not stop.is_set():
                notes: Counter[str] = Counter()
                t0 = time.perf_counter()
                form = _try_form(cl, base, notes)
                t1 = time.perf_counter()
                if not isinstance(form, tuple):
                    done.append((t0, t1, None, None, f"form GET: {form}", notes))
                    stop.wait(0.1)  # a person pauses after an error too; and no busy loop if all fail
                    continue
                t2 = time.perf_counter()
                try:
                    kind = classify(post_mint(cl, base, form, f"bench-s{c}-{index}-{i}"))
                except requests.RequestException as exc:
                    kind = client_error(exc)
                t3 = time.perf_counter()
                i += 1
                done.append((t0, t1, t2, t3, kind, notes))
                if kind != "ok":
                    stop.wait(0.1)
            return done

        log(
            f"part 3: C={c}: {args.start} start, {args.settle:g} s settle, then a {args.duration:g} s window "
            f"(latency {args.latency:g} s)"
        )
        with ThreadPoolExecutor(max_workers=c) as pool:
            try:
                futures = [pool.submit(loop, i, cl) for i, cl in enumerate(users)]
                time.sleep(args.settle)
                before = meter.snapshot()
                workers_before = set(meter.workers)
                w0 = time.perf_counter()
                with sampler:
                    time.sleep(args.duration)
                w1 = time.perf_counter()
                after = meter.snapshot()
            finally:
                stop.set()  # also on Ctrl+C / SIGTERM: the users finish their iteration and return
            log(f"part 3: C={c}: window over; letting the in-flight iterations finish")
            iterations = [it for f in futures for it in f.result()]
        cpu = CpuMeter.delta(before, after)
        # A worker recycled by max_requests takes its CPU time with it: the CPU figure is then wrong.
        recycled = set(meter.workers) != workers_before
        window = w1 - w0

        def inside(t: float | None, w0=w0, w1=w1) -> bool:
            return t is not None and w0 <= t < w1

        minted = [it for it in iterations if it[2] is not None]
        ok = [it for it in minted if it[4] == "ok" and inside(it[3])]
        errors_window: Counter[str] = Counter()
        errors_total: Counter[str] = Counter()
        for _, t1, t2, t3, kind, notes in iterations:
            found = Counter(notes)  # form GETs retried once count as in part 2
            if kind != "ok":
                found[kind if t2 is None else f"mint POST: {kind}"] += 1
            errors_total.update(found)
            if inside(t1 if t2 is None else t3):
                errors_window.update(found)
        ideal = c / args.latency
        throughput = len(ok) / window
        post = [it[3] - it[2] for it in ok]
        cycles = [it[3] - it[0] for it in ok]
        locks = sampler.result() or {}
        results.append(
            {
                "concurrency": c,
                "window_s": round(window, 3),
                "ok_window": len(ok),
                "ok_total": sum(1 for it in minted if it[4] == "ok"),
                "iterations_total": len(iterations),
                "per_s": round(throughput, 2),
                "ideal_per_s": round(ideal, 2),
                "efficiency": round(throughput / ideal, 3),
                # Little's law: the same rate from the mean cycle, free of the window's rounding (each
                # user completes a whole number of cycles in it: +-1 per user).
                "per_s_from_cycle": round(c * len(cycles) / sum(cycles), 2) if cycles else None,
                # Window only: successful mints whose POST ended in it, form GETs that ended in it.
                "mint_post": summary(post),
                "form_get": summary([it[1] - it[0] for it in iterations if it[2] is not None and inside(it[1])]),
                "cycle": summary(cycles),  # GET start -> POST end
                # Took 1.5x the stand-in latency or more: waited for a thread, the CPU or a lock.
                "waited": sum(1 for x in post if x >= 1.5 * args.latency),
                # Portal CPU in the window per mint completed in it, the form GETs included.
                "portal_cpu_ms_per_mint": round(1000 * cpu["portal_cpu_s"] / len(ok), 1)
                if ok and not recycled
                else None,
                "workers_recycled": recycled,
                "machine_busy_pct": cpu["machine_busy_pct"],
                "others_pct": cpu["others_pct"],
                "cpu": cpu,
                "pg_max_lock_waiters": locks.get("max_waiting"),
                "pg_max_lock_waiters_by_kind": locks.get("max_waiting_by_kind"),
                "errors_window": dict(errors_window),
                "errors": dict(errors_total),
            }
        )
        x = results[-1]
        log(
            f"part 3: C={c}: {len(ok)} ok in the {window:.2f} s window ({x['per_s']}/s, ideal {x['ideal_per_s']}/s)"
            f"{'; errors ' + str(dict(errors_total)) if errors_total else ''}"
            f"{'; a portal worker was recycled during the window' if recycled else ''}"
        )
    sampler.close()
    return {
        "latency_s": args.latency,
        "settle_s": args.settle,
        "duration_s": args.duration,
        "start": args.start,
        "results": results,
    }


# --- server-side evidence --------------------------------------------------------------------------
_ACCESS = re.compile(r'"(GET|POST) (\S+) HTTP/[\d.]+" (\d{3}) ')


def read_server_log(path: Path) -> dict:
    """What gunicorn and Django logged: warnings/errors by logger+message, exceptions by class,
    and non-2xx/3xx responses from the access log."""
    problems: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                problems[line[:120]] += 1
                continue
            problems[f"{entry.get('level')} {entry.get('logger')}: {str(entry.get('message'))[:100]}"] += 1
            if entry.get("exception"):
                exceptions[entry["exception"].strip().splitlines()[-1][:140]] += 1
            continue
        access = _ACCESS.search(line)
        if access:
            method, url, status = access.groups()
            if not status.startswith(("2", "3")):
                statuses[f"{method} {url.split('?')[0]} {status}"] += 1
            continue
        if re.search(r"\[(WARNING|ERROR|CRITICAL)\]", line):
            problems[re.sub(r"^\[[^\]]*\] \[\d+\] ", "", line)[:140]] += 1
        elif "Traceback" in line or re.match(r"^[\w.]+(Error|Exception):", line):
            exceptions[line[:140]] += 1
    return {
        "warnings_and_errors": dict(problems.most_common()),
        "exceptions": dict(exceptions.most_common()),
        "non_success_responses": dict(statuses.most_common()),
    }


# --- report ------------------------------------------------------------------------------------------
def machine_info(db: Database, gconf: dict) -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import django

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    return {
        "code": f"{git('rev-parse', '--short', 'HEAD') or 'unknown'}"
        + (f" + {changed} uncommitted file(s)" if changed else ""),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": db.label,
        "gunicorn": gconf,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_report(
    machine: dict, config: dict, overhead: dict | None, slow: dict | None, sustained: dict | None, server: dict
) -> None:
    g = machine["gunicorn"]
    print()
    print("Machine")
    print(f"  CPUs: {machine['cpu_count']} ({machine['cpus_usable']} usable) {machine['cpu_model']}")
    print(f"  {machine['platform']}; Python {machine['python']}; Django {machine['django']}")
    print(f"  Code: {machine['code']}; database: {machine['database']}")
    print(f"  Load average at start: {machine['load_average_at_start']}, at end: {machine.get('load_average_at_end')}")
    print(
        f"  gunicorn: {g['workers']} workers x {g['threads']} threads ({g['worker_class']}), "
        f"timeout {g['timeout']} s, keepalive {g['keepalive']} s"
    )
    print(f"  Run: {config}")
    if overhead:
        s = overhead["stats"]
        print()
        print("Part 1 - mint overhead (stand-in latency 0, sequential, one keep-alive connection each)")
        print(f"  {'':38} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
        rows = [
            ("direct", "create straight to the stand-in"),
            ("mint", "portal mint  POST /keys/new/ (htmx)"),
            ("mint_before_upstream", "  of which before the Requesty call"),
            ("mint_after_upstream", "  of which after the Requesty answer"),
            ("form", "portal form  GET /keys/new/"),
            ("healthz", "portal /healthz (floor: gunicorn+WSGI)"),
        ]
        for key, label in rows:
            v = s[key]
            print(
                f"  {label:38} {v['n']:>5} {_f(v['p50_ms']):>8} {_f(v['p95_ms']):>8} "
                f"{_f(v['p99_ms']):>8} {_f(v['mean_ms']):>8}"
            )
        print(f"  Portal overhead per mint (median mint - median direct create): {_f(overhead['overhead_p50_ms'])} ms")
        pc, mc = overhead["portal_cpu_ms"], overhead["cpu"]
        print(f"  Portal CPU per request (mean): mint POST {_f(pc['mint'])} ms, form GET {_f(pc['form'])} ms")
        print(
            f"  Machine CPU busy during part 1: {mc['machine_busy_pct']}% "
            f"(processes other than portal, stand-in and this script: {mc['others_pct']}%)"
        )
        _print_errors(overhead["errors"])
    if slow:
        print()
        print(f"Part 2 - slow Requesty (stand-in answers after {slow['latency_s']} s; C mints fired together)")
        print(
            f"  {'C':>3} {'ok/sent':>9} {'ideal/s':>8} {'median/s':>9} {'min/s':>7} {'max/s':>7} {'eff.':>6} "
            f"{'waited':>7} {'CPU ms':>7} {'busy':>5} {'busy<R':>7} {'others':>6}"
        )
        for x in slow["results"]:
            print(
                f"  {x['concurrency']:>3} {str(x['ok']) + '/' + str(x['sent']):>9} {x['ideal_per_s']:>8} "
                f"{x['median_per_s']:>9} {x['min_per_s']:>7} {x['max_per_s']:>7} {x['efficiency']:>6.0%} "
                f"{x['waited']:>7} {_f(x['portal_cpu_ms_per_mint']):>7} "
                f"{_f(x['machine_busy_pct'], 0) + '%':>5} {_f(x['busy_before_upstream_pct'], 0) + '%':>7} "
                f"{_f(x['others_pct'], 0) + '%':>6}"
            )
        print()
        print(f"  {'':3} {'mint (s)':>13} {'before Requesty (s)':>20} {'after Requesty (s)':>20}")
        print(f"  {'C':>3} {'p50':>6} {'max':>6} {'p50':>9} {'max':>10} {'p50':>9} {'max':>10}")
        for x in slow["results"]:
            print(
                f"  {x['concurrency']:>3} {_f(x['latency_p50_s'], 2):>6} {_f(x['latency_max_s'], 2):>6} "
                f"{_f(x['before_upstream_p50_s'], 3):>9} {_f(x['before_upstream_max_s'], 3):>10} "
                f"{_f(x['after_upstream_p50_s'], 3):>9} {_f(x['after_upstream_max_s'], 3):>10}"
            )
        _print_lock_waiters(slow["results"])
        for x in slow["results"]:
            if x["errors"]:
                print(f"  C={x['concurrency']}:")
                _print_errors(x["errors"], indent="    ")
        print("  (mints/s = successful mints / (last response - first request) per round, median of the rounds;")
        print("   waited = mints that took >= 1.5x the stand-in latency (queued for a thread, the CPU or a lock);")
        print("   CPU ms = portal CPU per completed mint; busy = whole machine's CPU use during the POSTs;")
        print("   busy<R = the same from the first POST until the last mint reached Requesty;")
        print("   others = CPU used by processes that are not the portal, the stand-in or this script;")
        print("   before/after Requesty = from the POST to the stand-in's create, and from it to the response;")
        print("   p50 = median of the rounds' medians, max = over all rounds)")
    if sustained:
        print()
        print(
            f"Part 3 - sustained (stand-in answers after {sustained['latency_s']} s; C users each loop form GET -> "
            f"mint POST; {sustained['start']} start, {sustained['settle_s']:g} s settle, "
            f"{sustained['duration_s']:g} s window)"
        )
        print(
            f"  {'C':>3} {'ok':>5} {'ideal/s':>8} {'mints/s':>8} {'eff.':>6} {'C/cycle':>8} {'waited':>7} "
            f"{'CPU ms':>7} {'busy':>5} {'others':>6}"
        )
        for x in sustained["results"]:
            print(
                f"  {x['concurrency']:>3} {x['ok_window']:>5} {x['ideal_per_s']:>8} {x['per_s']:>8} "
                f"{x['efficiency']:>6.0%} {_f(x['per_s_from_cycle'], 2):>8} {x['waited']:>7} "
                f"{_f(x['portal_cpu_ms_per_mint']):>7} "
                f"{_f(x['machine_busy_pct'], 0) + '%':>5} {_f(x['others_pct'], 0) + '%':>6}"
            )
        print()
        print(f"  {'':3} {'mint POST (s)':>27} {'form GET (ms)':>15} {'cycle (s)':>10}")
        print(f"  {'C':>3} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} {'p50':>7} {'p95':>7} {'p50':>10}")

        def s(ms):
            return _f(None if ms is None else ms / 1000, 3)

        for x in sustained["results"]:
            m, g, y = x["mint_post"], x["form_get"], x["cycle"]
            print(
                f"  {x['concurrency']:>3} {s(m['p50_ms']):>6} {s(m['p95_ms']):>6} {s(m['p99_ms']):>6} "
                f"{s(m['max_ms']):>6} {_f(g['p50_ms']):>7} {_f(g['p95_ms']):>7} {s(y['p50_ms']):>10}"
            )
        _print_lock_waiters(sustained["results"])
        for x in sustained["results"]:
            if x["workers_recycled"]:
                print(f"  C={x['concurrency']}: a portal worker was recycled (max_requests) in the window: no CPU ms")
            if x["errors"]:
                print(f"  C={x['concurrency']}: in the window / overall ({x['ok_total']} ok overall):")
                for text, count in sorted(x["errors"].items(), key=lambda kv: -kv[1]):
                    print(f"    error x{x['errors_window'].get(text, 0)} / {count}: {text}")
        print("  (ok = successful mints whose POST completed in the window; mints/s = ok / window length;")
        print("   eff. = mints/s / ideal, ideal = C / latency, i.e. as if a cycle took only the latency;")
        print("   C/cycle = C / mean cycle of those mints: the rate without the window's +-1 mint per user;")
        print("   waited = mints in the window that took >= 1.5x the stand-in latency;")
        print("   CPU ms = portal CPU in the window per ok mint, its form GET included;")
        print("   busy = whole machine's CPU use in the window; others = CPU used by other processes;")
        print("   mint POST and form GET latencies: requests that ended in the window; cycle = GET start -> POST end)")
    print()
    print("Server side (gunicorn + Django log)")
    any_line = False
    for title, key in (
        ("non-2xx/3xx responses", "non_success_responses"),
        ("exceptions", "exceptions"),
        ("warnings/errors", "warnings_and_errors"),
    ):
        if server["log"][key]:
            any_line = True
            print(f"  {title}:")
            for text, count in list(server["log"][key].items())[:15]:
                print(f"    {count:>5}  {text}")
    if not any_line:
        print("  no warnings, errors or non-2xx/3xx responses logged")
    print(f"  database afterwards: {server['db_state']}")
    print(f"  stand-in keys created: {server['standin_keys']}")


def _print_lock_waiters(results: list[dict]) -> None:
    if any(x.get("pg_max_lock_waiters") is not None for x in results):
        print()
        for x in results:
            print(
                f"  C={x['concurrency']}: most portal sessions waiting on a PostgreSQL lock at once: "
                f"{x['pg_max_lock_waiters']} {x['pg_max_lock_waiters_by_kind'] or ''}"
            )


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_errors(errors: dict, indent: str = "  ") -> None:
    if not errors:
        print(f"{indent}errors: none")
        return
    for text, count in sorted(errors.items(), key=lambda kv: -kv[1]):
        print(f"{indent}error x{count}: {text}")


# --- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="sequential mints in part 1 (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations before part 1")
    parser.add_argument("--concurrency", default="8,16,32", help="concurrent users in parts 2 and 3 (default 8,16,32)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per concurrency level (default 5)")
    parser.add_argument("--latency", type=float, default=1.0, help="stand-in latency in parts 2 and 3, seconds")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured window per concurrency level in part 3, seconds"
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="unmeasured run-in before each part 3 window, seconds"
    )
    parser.add_argument(
        "--start",
        choices=("staggered", "lockstep"),
        default="staggered",
        help="part 3: users start spread over one latency (default), or all at the same instant",
    )
    parser.add_argument(
        "--part",
        choices=("all", "overhead", "slow", "sustained"),
        default="all",
        help="run only part 1 (overhead), 2 (slow) or 3 (sustained)",
    )
    parser.add_argument(
        "--database-url",
        help="postgres://user@127.0.0.1:5432/postgres: a bench_portal_<pid> database is created beside "
        "this one and dropped afterwards (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--sqlite-init",
        metavar="SQL",
        help="SQLite only: init_command for every connection, e.g. "
        '"PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"',
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) afterwards")
    args = parser.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency takes a comma-separated list of integers, e.g. 8,16,32")
    if args.sqlite_init and args.database_url:
        parser.error("--sqlite-init applies to the SQLite default only")
    if not args.concurrency:
        parser.error("--concurrency needs at least one level")
    if (
        args.n < 1
        or args.rounds < 1
        or args.latency <= 0
        or args.duration <= 0
        or args.settle <= 0
        or any(c < 1 for c in args.concurrency)
    ):
        parser.error("--n, --rounds, --latency, --duration, --settle and --concurrency must be positive")
    if args.start == "staggered" and args.settle < args.latency:
        parser.error("--settle must be at least --latency with a staggered start (the last user starts then)")
    return args


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl+C, so the finally blocks below stop everything this script started.
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bench-mint-"))
    procs = Processes()
    with ExitStack() as cleanup:
        if args.keep:
            cleanup.callback(log, f"kept {workdir}")
        else:
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        db = Database(args.database_url, workdir, args.sqlite_init)
        cleanup.callback(db.drop)
        cleanup.callback(procs.stop_all)  # runs before the drop and the rmtree (LIFO)

        token = "bench-admin-" + secrets.token_urlsafe(24)
        standin_url, standin_pid = start_standin(procs, token, workdir)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = portal_env(db, standin_url, token, f"127.0.0.1:{port}", workdir)
        gconf = gunicorn_settings(env)
        machine = machine_info(db, gconf)
        log(f"database {db.label}; stand-in {standin_url}; portal {base}; temp {workdir}")

        log("migrate, collectstatic, bench users")
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")
        password = secrets.token_urlsafe(16)
        run = {part: args.part in ("all", part) for part in ("overhead", "slow", "sustained")}
        n_users = max(args.concurrency) if run["slow"] or run["sustained"] else 1
        manage(
            {**env, "BENCH_PASSWORD": password, "BENCH_PREFIX": USER_PREFIX, "BENCH_USERS": str(n_users)},
            "shell",
            "-c",
            CREATE_USERS,
        )

        logfile, portal_pid = start_portal(procs, env, base, workdir)
        meter = CpuMeter(portal_pid, standin_pid)
        log(f"portal up; signing in {n_users} user(s)")
        with ThreadPoolExecutor(max_workers=4) as pool:  # each sign-in is one PBKDF2 hash server-side
            clients = list(pool.map(lambda i: sign_in(base, f"{USER_PREFIX}{i}", password), range(n_users)))

        overhead = part_overhead(args, base, standin_url, token, clients[0], meter) if run["overhead"] else None
        slow = part_slow(args, base, standin_url, clients, meter, db) if run["slow"] else None
        sustained = part_sustained(args, base, standin_url, clients, meter, db) if run["sustained"] else None

        set_latency(standin_url, 0)
        server = {
            "db_state": json.loads(manage(env, "shell", "-c", ISSUANCE_STATES).strip().splitlines()[-1]),
            "standin_keys": standin_key_count(standin_url),
        }
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        procs.stop_all()  # flush and close the log before reading it
        server["log"] = read_server_log(logfile)

        config = {
            "n": args.n if overhead else None,
            "concurrency": args.concurrency if slow or sustained else None,
            "rounds": args.rounds if slow else None,
            "latency_s": args.latency if slow or sustained else None,
            "settle_s": args.settle if sustained else None,
            "duration_s": args.duration if sustained else None,
            "start": args.start if sustained else None,
        }
        print_report(machine, config, overhead, slow, sustained, server)
        if args.json:
            payload = {
                "machine": machine,
                "config": config,
                "overhead": overhead,
                "slow": slow,
                "sustained": sustained,
                "server": server,
            }
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
            log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything this script started has been stopped")
        sys.exit(130)
