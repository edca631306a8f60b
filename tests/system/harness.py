"""The portal as production runs it, for system tests and the load script.

`System` starts, on 127.0.0.1 only:

- a dedicated PostgreSQL database beside the one the admin URL names (default: $DATABASE_URL's
  server), migrated as the superuser and used by the portal through its own least-privilege role
  (`GRANT SELECT, INSERT, UPDATE, DELETE`), so a test can revoke the portal's rights, shut the
  database to new connections and terminate the portal's sessions without touching anyone else's
  database or the shared server;
- the stand-in Requesty (in-process `StandIn(control=True)`, or a URL of one running elsewhere);
- the portal under `gunicorn -c gunicorn.conf.py` (gthread workers) with DEBUG off and the
  production settings, relaxed only where plain HTTP on loopback needs it; the JSON log and the
  access log go to one file per instance, which the leak sweep reads. More instances with other
  environment variables (a closed Requesty port, a kill point) can run beside the first one, on the
  same database and stand-in.

Everything is stopped and dropped by `System.close()` (also when start-up fails half-way).

`Client` is a signed-in browser as htmx drives it: the one-time nonce and the CSRF token come from
the page, POSTs carry `HX-Request: true` and `X-CSRFToken`.

The checks every scenario ends with live here too: `check_invariant` (shared/security.md I3 plus
"no duplicate mints") and the leak sweeps (I1) over the database, the server log and pages.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
ADMIN_KEY_ID = "00000000-0000-4000-8000-000000000001"  # the admin token's own key in the stand-in
TOKEN = "RELIABILITY-ADMIN-TOKEN-4e1f"  # the stand-in's well-known admin token for these runs
PASSWORD = "reliability-pass-8d2c"  # every harness user's password (a throw-away database)
TIMEOUT = (5, 60)  # (connect, read) for every request the harness makes: it can never hang on one
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_FORBIDDEN_DB_NAMES = {"postgres", "test_postgres", "root", "test_root", "template0", "template1"}


def log(message: str) -> None:
    print(f"[harness] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released: connecting is refused)."""
    return free_port()


def new_http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route loopback traffic through a proxy from the environment
    return session


def admin_database_url() -> str:
    """The PostgreSQL server to create our database on: $DATABASE_URL's when it is PostgreSQL."""
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else DEFAULT_ADMIN_URL


# --- the database ----------------------------------------------------------------------------------
class Database:
    """Our own database and login role (same name) on a shared server; never anyone else's."""

    def __init__(self, admin_url: str, name: str) -> None:
        parts = urlsplit(admin_url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("the admin URL must be a postgres:// URL")
        if parts.hostname not in LOOPBACK:
            raise ValueError("the database server must be on this machine (127.0.0.1)")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or name in _FORBIDDEN_DB_NAMES:
            raise ValueError(f"refusing database name {name!r}")
        self.name = self.role = name
        # CREATE/DROP DATABASE run from the maintenance database, as Django's test runner does:
        # the URL's own database need not exist (pytest-django only creates test_<name>).
        self.admin_url = urlunsplit(parts._replace(path="/postgres"))
        self.owner_url = urlunsplit(parts._replace(path="/" + name))  # the admin URL's (super)user
        host = f"{parts.hostname}:{parts.port or 5432}"
        self.app_url = urlunsplit(parts._replace(netloc=f"{self.role}@{host}", path="/" + name))
        self.created = False

    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def connect(self):
        """A superuser connection to our database: sweeps, invariant queries, privilege changes."""
        import psycopg

        return psycopg.connect(self.owner_url, autocommit=True, connect_timeout=10)

    def create(self) -> None:
        from psycopg import sql

        with self._admin() as conn:
            ident = sql.Identifier(self.name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        self.created = True

    def grant_app_role(self) -> None:
        """Run after migrate: the portal's role may read and write rows, nothing more."""
        from psycopg import sql

        role = sql.Identifier(self.role)
        with self.connect() as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            rows = "SELECT, INSERT, UPDATE, DELETE"
            conn.execute(sql.SQL(f"GRANT {rows} ON ALL TABLES IN SCHEMA public TO {{}}").format(role))
            conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))

    def set_table_rights(self, table: str, rights: str, *, granted: bool) -> None:
        from psycopg import sql

        template = "GRANT {} ON {} TO {}" if granted else "REVOKE {} ON {} FROM {}"
        if not re.fullmatch(r"[A-Z, ]+", rights):
            raise ValueError(rights)
        with self.connect() as conn:
            conn.execute(sql.SQL(template).format(sql.SQL(rights), sql.Identifier(table), sql.Identifier(self.role)))

    def allow_connections(self, allowed: bool) -> None:
        """Close (or reopen) our database to every new connection, then cut the portal's sessions:
        to the portal the database is gone. The shared server is untouched."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(self.name), sql.SQL("true" if allowed else "false")
                )
            )
            if not allowed:
                self._terminate(conn)

    def terminate_app_sessions(self) -> int:
        with self._admin() as conn:
            return self._terminate(conn)

    def _terminate(self, conn) -> int:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
            [self.name, self.role],
        ).fetchall()
        return len(rows)

    def drop(self) -> None:
        if not self.created:
            return
        from psycopg import sql

        with self._admin() as conn:
            ident = sql.Identifier(self.name)
            with suppress(Exception):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        self.created = False

    def tables(self, conn) -> list[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]


# --- the portal under gunicorn ---------------------------------------------------------------------
def base_env() -> dict[str, str]:
    """Only what a bare machine has: nothing leaks in from the test settings (DJANGO_SETTINGS_MODULE,
    DATABASE_URL...) or a developer's shell."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}


def portal_env(*, database_url: str, standin_url: str, static_root: Path, **overrides: str) -> dict[str, str]:
    """A production configuration (DEBUG off, manifest static files, the production checks' values)
    minus what needs TLS on a loopback run."""
    env = base_env()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "false",
            "PORTAL_SANDBOX": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "AUDIT_HMAC_KEY": secrets.token_urlsafe(32),
            "DATABASE_URL": database_url,
            "REQUESTY_BASE_URL": standin_url,  # http:// on loopback: only a deploy-check warning
            "REQUESTY_ADMIN_TOKEN": TOKEN,
            "REQUESTY_CONNECT_TIMEOUT": "1",
            "REQUESTY_READ_TIMEOUT": "2",
            "GUNICORN_TIMEOUT": "30",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "EMAIL_URL": "consolemail://",  # error mails land in the log file, which is swept
            "ADMINS": "ops@example.com",
            "LOG_LEVEL": "DEBUG",  # urllib3 included: the sweep must see everything that is logged
            "PORTAL_MAX_ACTIVE_KEYS": "100000",
            "PORTAL_MINTS_PER_HOUR": "100000",
            "PORTAL_MAX_TOTAL_MONTHLY_LIMIT": "100000000",
            "STATIC_ROOT": str(static_root),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(overrides)
    return env


class Portal:
    """One gunicorn instance (master + workers), in its own session so teardown can always reach it."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = dict(env)
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "gunicorn.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Portal:
        self.port = free_port()
        env = {
            **self.env,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            # gunicorn (25.1+) opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl and unlinks
            # whatever is there: one private directory per instance.
            "XDG_RUNTIME_DIR": str(self.dir),
        }
        out = open(self.log_path, "ab")  # noqa: SIM115 -- handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        http = new_http()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with suppress(requests.RequestException):
                if http.get(f"{self.base_url}/healthz", timeout=(1, 5)).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn {self.name}: /healthz never answered 200\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # quick shutdown: nothing here needs graceful draining
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"gunicorn {self.name} (pid {proc.pid}) did not stop; killing its process group")
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
            proc.wait(timeout=10)

    def restart(self, **overrides: str) -> Portal:
        self.stop()
        self.env.update(overrides)
        return self.start()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not running")
        return self.proc.pid

    def workers(self) -> list[int]:
        return children(self.pid)

    def workers_connected_to(self, port: int) -> list[int]:
        """Workers holding an established TCP connection to 127.0.0.1:`port` (the stand-in)."""
        sockets = established_to(port)
        found = []
        for pid in self.workers():
            fds = Path(f"/proc/{pid}/fd")
            inodes = set()
            with suppress(OSError):
                for fd in fds.iterdir():
                    with suppress(OSError):
                        target = os.readlink(fd)
                        if target.startswith("socket:["):
                            inodes.add(int(target[8:-1]))
            if inodes & sockets:
                found.append(pid)
        return found

    def wait_for_replacement(self, before: list[int], timeout: float = 20) -> set[int]:
        """After a SIGKILL the master forks a replacement: wait until the worker count is back and
        return the pids that died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.workers()
            if len(current) >= len(before) and set(current) != set(before):
                return set(before) - set(current)
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn {self.name} did not replace a killed worker")

    def manage(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        """manage.py with this instance's environment (the same settings, database and Requesty)."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            command = " ".join(args)
            raise RuntimeError(f"manage.py {command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def reconcile(self, **env: str) -> subprocess.CompletedProcess:
        return self.manage("reconcile_keys", "--stale-minutes", "0", check=False, **env)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


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


def established_to(port: int) -> set[int]:
    """Socket inodes of ESTABLISHED TCP connections whose remote end is 127.0.0.1:`port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], int(fields[9])
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


# --- a signed-in browser ---------------------------------------------------------------------------
_NONCE = re.compile(r'<input[^>]*name="nonce"[^>]*value="([^"]+)"')
_HTMX_CSRF = re.compile(r'"x-csrftoken": "([^"]+)"')
_LOGIN_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_ROW = re.compile(r'<tr id="key-(\d+)">\s*<td><a href="/keys/\d+/">([^<]*)</a>')
_ALERT = re.compile(r'role="alert"[^>]*>\s*(?:<p>)?([^<]{1,300})')


class PortalError(Exception):
    pass


@dataclass(frozen=True)
class Form:
    nonce: str
    csrf: str


class Client:
    """requests.Session as a browser with htmx uses the portal. Every response's headers are kept
    (`headers_seen`) so a sweep can look for the secret in headers and cookies too."""

    def __init__(self, base_url: str, http: requests.Session | None = None) -> None:
        self.base_url = base_url
        self.http = http or new_http()
        self.csrf = ""
        self.headers_seen: list[str] = []
        self.pages: tuple[str, ...] = ("/", "/keys/", "/keys/new/")  # what the leak sweep fetches

    def clone(self, base_url: str) -> Client:
        """The same signed-in browser talking to another instance (same database and SECRET_KEY)."""
        http = new_http()
        http.cookies.update(self.http.cookies)
        twin = Client(base_url, http)
        twin.csrf, twin.pages = self.csrf, self.pages
        return twin

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        response = self.http.request(method, self.base_url + path, **kwargs)
        self.headers_seen.append("\n".join(f"{k}: {v}" for k, v in response.headers.items()))
        if match := _HTMX_CSRF.search(response.text):
            self.csrf = match.group(1)
        return response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def sign_in(self, username: str, password: str = PASSWORD) -> Client:
        page = self.get("/accounts/login/")
        token = _LOGIN_CSRF.search(page.text)
        if page.status_code != 200 or not token:
            raise PortalError(f"sign-in page: HTTP {page.status_code}")
        response = self.request(
            "POST",
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1), "next": ""},
        )
        if response.status_code != 302:
            raise PortalError(f"sign-in as {username} failed: HTTP {response.status_code}")
        return self

    def form(self) -> Form:
        """GET /keys/new/ as a browser does: a fresh one-time nonce and the CSRF token from the page."""
        page = self.get("/keys/new/")
        nonce, csrf = _NONCE.search(page.text), _HTMX_CSRF.search(page.text)
        if page.status_code != 200 or not nonce or not csrf:
            raise PortalError(f"form page: HTTP {page.status_code}")
        return Form(nonce.group(1), csrf.group(1))

    def mint(self, name: str, form: Form | None = None, monthly_limit: str = "5", **kwargs) -> requests.Response:
        """POST the form the way htmx 2 sends it (hx-post on the form, hx-headers from <body>)."""
        form = form or self.form()
        return self.request(
            "POST",
            "/keys/new/",
            data={
                "csrfmiddlewaretoken": form.csrf,
                "nonce": form.nonce,
                "name": name,
                "monthly_limit": monthly_limit,
                "manage": "none",
                "completions": "write",
            },
            headers=self._htmx("/keys/new/", form.csrf, target="mint"),
            **kwargs,
        )

    def keys(self) -> dict[str, int]:
        """The user's keys on /keys/: name -> pk."""
        page = self.get("/keys/")
        if page.status_code != 200:
            raise PortalError(f"/keys/: HTTP {page.status_code}")
        return {name: int(pk) for pk, name in _ROW.findall(page.text)}

    def revoke(self, pk: int, **kwargs) -> requests.Response:
        """The confirmation's POST, as htmx sends it from the list row."""
        if not self.csrf:
            self.get("/keys/")
        return self.request(
            "POST",
            f"/keys/{pk}/revoke/",
            data={"csrfmiddlewaretoken": self.csrf},
            headers=self._htmx("/keys/", self.csrf, target=f"key-{pk}"),
            **kwargs,
        )

    def _htmx(self, current: str, csrf: str, target: str) -> dict[str, str]:
        return {
            "HX-Request": "true",
            "HX-Target": target,
            "HX-Current-URL": self.base_url + current,
            "X-CSRFToken": csrf,
        }


def alert_text(response: requests.Response) -> str:
    """What the portal told the user (the first role="alert"), whitespace collapsed."""
    match = _ALERT.search(response.text)
    return " ".join(match.group(1).split()) if match else ""


def shows_secret(response: requests.Response) -> bool:
    return "data-secret" in response.text


# --- leak sweep over what lives outside the server process -----------------------------------------
_TOKENISH = re.compile(r"[A-Za-z0-9_\-+/]{16,}={0,2}")


def _decodings(text: str):
    """The text, plus every base64 run in it decoded (and inflated when zlib-compressed): Django
    signs sessions, message cookies and form tokens as base64 of (possibly compressed) JSON."""
    yield text
    for match in _TOKENISH.finditer(text):
        run = match.group(0)
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                raw = decode(run + "=" * (-len(run) % 4))
            except (binascii.Error, ValueError):
                continue
            yield raw.decode("latin-1")
            with suppress(zlib.error):
                yield zlib.decompress(raw).decode("latin-1")


def contains_secret(text: str, canary: str) -> bool:
    """The canary, or a recognisable part of it (a truncated or partial secret), in `text` or in
    anything base64/zlib-encoded inside it."""
    needles = [canary, canary[-16:], canary[-32:-16]] if len(canary) >= 40 else [canary]
    return any(needle in variant for variant in _decodings(text) for needle in needles)


def sweep_database(db: Database, canary: str) -> list[str]:
    """Every row of every table, as text, through raw SQL (the decoders catch signed sessions)."""
    from psycopg import sql

    found = []
    with db.connect() as conn:
        for table in db.tables(conn):
            query = sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(table))
            for (row,) in conn.execute(query):
                if contains_secret(row, canary):
                    found.append(f"database table {table}")
                    break
    return found


def sweep_text(label: str, text: str, canary: str) -> list[str]:
    return [label] if contains_secret(text, canary) else []


def sweep_pages(client: Client, canary: str, paths=("/", "/keys/", "/keys/new/")) -> list[str]:
    """Fresh GETs of every page the user can reach: the fixed ones and each key's own page."""
    found = []
    seen = list(paths)
    with suppress(PortalError):
        seen += [f"/keys/{pk}/" for pk in client.keys().values()]
    for path in seen:
        response = client.get(path)
        if contains_secret(response.text, canary):
            found.append(f"page {path}")
    return found


def sweep_headers(client: Client, canary: str) -> list[str]:
    return ["response headers or cookies"] if any(contains_secret(h, canary) for h in client.headers_seen) else []


# --- the invariant -----------------------------------------------------------------------------------
def upstream_keys(standin_url: str) -> dict[str, str]:
    """The stand-in's keys (id -> name) through its control API; the admin token's key excluded."""
    response = new_http().get(f"{standin_url}/_standin/state", timeout=TIMEOUT)
    response.raise_for_status()
    return {k["id"]: k["name"] for k in response.json()["keys"] if k["id"] != ADMIN_KEY_ID}


_MARKER = re.compile(r"\[portal:([0-9a-f]{12})\]$")


def check_invariant(
    db: Database, upstream: dict[str, str], create_names: list[str] | None = None, *, settled: bool = True
) -> list[str]:
    """What must hold after reconciliation (an empty list means it holds):

    - every key the stand-in holds is an active portal key whose issuance is `issued` and has its
      `mint.issued` audit event (I3: nothing unaccounted for upstream);
    - every issuance in state `issued` has its key record and audit event, and every active key
      record still exists upstream (nothing lost in the other direction);
    - with `settled` (the reconciliation's list succeeded), no issuance is `requested`/`unknown`;
    - no duplicate mints: each nonce has one issuance, and the stand-in saw at most one create per
      issuance (its `[portal:<reference>]` marker), when `create_names` is given.
    """
    problems = []
    with db.connect() as conn:
        keys = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT k.api_key_id, k.status, i.state, i.id FROM keys_issuedkey k "
                "JOIN keys_issuance i ON i.id = k.issuance_id"
            )
        }
        issued_events = "SELECT DISTINCT issuance_id FROM keys_auditevent WHERE action = 'mint.issued'"
        audited = {row[0] for row in conn.execute(issued_events)}
        issued = [row[0] for row in conn.execute("SELECT id FROM keys_issuance WHERE state = 'issued'")]
        with_key = {row[2] for row in keys.values()}
        pending = conn.execute(
            "SELECT id, state, name FROM keys_issuance WHERE state IN ('requested', 'unknown')"
        ).fetchall()
        duplicates = conn.execute("SELECT nonce FROM keys_issuance GROUP BY nonce HAVING count(*) > 1").fetchall()
    for key_id, name in upstream.items():
        record = keys.get(key_id)
        if record is None:
            problems.append(f"upstream key {key_id} “{name}” is no portal key")
        elif record[:2] != ("active", "issued") or record[2] not in audited:
            problems.append(
                f"upstream key {key_id} “{name}” is recorded as {record[:2]}, audited={record[2] in audited}"
            )
    for issuance_id in issued:
        if issuance_id not in with_key or issuance_id not in audited:
            problems.append(f"issuance {issuance_id} is issued without its key record or mint.issued event")
    for key_id, (status, _state, _issuance) in keys.items():
        if status == "active" and key_id not in upstream:
            problems.append(f"active portal key {key_id} does not exist upstream")
    if settled:
        problems += [f"issuance {i.hex[:12]} “{name}” left {state}" for i, state, name in pending]
    problems += [f"nonce {n} has several issuances" for (n,) in duplicates]
    if create_names is not None:
        markers = Counter(m.group(1) for name in create_names if (m := _MARKER.search(name)))
        problems += [f"issuance {ref} was created upstream {n} times" for ref, n in markers.items() if n > 1]
    return problems


def issuance_states(db: Database) -> dict[str, str]:
    """name -> state, for scenario assertions (names are unique per scenario)."""
    with db.connect() as conn:
        return dict(conn.execute("SELECT name, state FROM keys_issuance ORDER BY created_at").fetchall())


def issuance(db: Database, name: str) -> dict:
    with db.connect() as conn:
        row = conn.execute(
            "SELECT id, state, api_key_id, upstream_status FROM keys_issuance WHERE name = %s", [name]
        ).fetchone()
        if row is None:
            return {}
        events = conn.execute("SELECT action FROM keys_auditevent WHERE issuance_id = %s ORDER BY seq", [row[0]])
        actions = [r[0] for r in events]
    return {"id": row[0], "state": row[1], "api_key_id": row[2], "upstream_status": row[3], "actions": actions}


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def access_log(text: str) -> list[tuple[str, str, int]]:
    """(method, path, status) of every request in gunicorn's access log lines."""
    return [(m["method"], m["path"], int(m["status"])) for m in _ACCESS.finditer(text)]


def server_errors(text: str) -> list[str]:
    """500s in the access log and unhandled exceptions Django logged ("Internal Server Error")."""
    found = [f"{method} {path} -> 500" for method, path, status in access_log(text) if status == 500]
    found += [line[:300] for line in text.splitlines() if "Internal Server Error" in line]
    return found


# --- the whole system ----------------------------------------------------------------------------------
USERS_CODE = """
import os
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
encoded = make_password(os.environ["HARNESS_PASSWORD"])  # hashed once: the users differ only by name
names = [n for n in os.environ["HARNESS_USERS"].split(",") if n]
admins = set(n for n in os.environ.get("HARNESS_ADMINS", "").split(",") if n)
User.objects.bulk_create(
    User(username=n, email=f"{n}@example.com", password=encoded, is_superuser=n in admins, is_staff=n in admins)
    for n in names
)
"""


class System:
    """Database + stand-in + portal instances, torn down together by close()."""

    def __init__(
        self,
        *,
        standin=None,
        standin_url: str | None = None,
        db_name: str | None = None,
        admin_url: str | None = None,
        workdir: Path | None = None,
        **env: str,
    ) -> None:
        if (standin is None) == (standin_url is None):
            raise ValueError("give exactly one of standin (in-process StandIn) or standin_url")
        self.standin = standin
        self._standin_url = standin_url
        self.stack = ExitStack()
        self.tmp: Path | None = None
        if workdir is None:
            workdir = self.tmp = Path(tempfile.mkdtemp(prefix="portal-system-"))
        self.workdir = workdir
        self.db = Database(admin_url or admin_database_url(), db_name or f"reliability_{os.getpid()}")
        self.extra_env = env
        self.portals: list[Portal] = []
        self._log_seen: dict[Path, int] = {}
        self.portal: Portal | None = None

    @property
    def standin_url(self) -> str:
        return self.standin.base_url if self.standin is not None else self._standin_url

    def env(self, **overrides: str) -> dict[str, str]:
        return portal_env(
            database_url=self.db.app_url,
            standin_url=self.standin_url,
            static_root=self.workdir / "static",
            **{**self.extra_env, **overrides},
        )

    def start(self, users: list[str] = (), admins: list[str] = ()) -> System:
        try:
            if self.standin is not None:
                self.standin.start()
                self.stack.callback(self.standin.stop)
            self.stack.callback(self.db.drop)
            self.db.create()
            self.base_env = self.env()
            owner = {**self.base_env, "DATABASE_URL": self.db.owner_url}
            started = time.monotonic()
            self._manage(owner, "migrate", "--noinput", "-v0")
            self.db.grant_app_role()
            self._manage(owner, "collectstatic", "--noinput", "-v0")
            if users or admins:
                self._manage(
                    {
                        **owner,
                        "HARNESS_PASSWORD": PASSWORD,
                        "HARNESS_USERS": ",".join([*users, *admins]),
                        "HARNESS_ADMINS": ",".join(admins),
                    },
                    "shell",
                    "-c",
                    USERS_CODE,
                )
            log(f"database {self.db.name} migrated, static collected, users made in {time.monotonic() - started:.1f}s")
            self.portal = self.add_portal("portal")
        except BaseException:
            self.close()
            raise
        return self

    def add_portal(self, name: str, **overrides: str) -> Portal:
        """Another gunicorn instance on the same database and stand-in, with other settings; it
        shares SECRET_KEY and AUDIT_HMAC_KEY with the first, so sessions work on both."""
        keep = {k: self.base_env[k] for k in ("SECRET_KEY", "AUDIT_HMAC_KEY")}
        portal = Portal(name, self.env(**keep, **overrides), self.workdir)
        self.portals.append(portal)
        self.stack.callback(portal.stop)
        started = time.monotonic()
        portal.start()
        log(f"gunicorn {name} up on {portal.base_url} in {time.monotonic() - started:.1f}s")
        return portal

    def remove_portal(self, portal: Portal) -> None:
        portal.stop()

    def client(self, username: str, portal: Portal | None = None) -> Client:
        return Client((portal or self.portal).base_url).sign_in(username)

    def log_text(self) -> str:
        return "\n".join(p.log_text() for p in self.portals)

    def new_log_text(self) -> str:
        """What the instances logged since the last call (so one failure does not fail every later check)."""
        parts = []
        for portal in self.portals:
            text = portal.log_text()
            parts.append(text[self._log_seen.get(portal.log_path, 0) :])
            self._log_seen[portal.log_path] = len(text)
        return "\n".join(parts)

    def _manage(self, env: dict[str, str], *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            if self.tmp is not None and os.environ.get("SYSTEM_KEEP_LOGS"):
                log(f"kept the logs in {self.workdir} (SYSTEM_KEEP_LOGS)")
            elif self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def log_records(text: str) -> list[dict]:
    """The portal's JSON log records among gunicorn's own lines."""
    import json

    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            with suppress(ValueError):
                records.append(json.loads(line))
    return records


def make_canary() -> str:
    """A secret no real code path could produce by accident; long enough for partial matches."""
    return "CANARY-" + secrets.token_hex(20)
