"""Start the portal as production runs it, on 127.0.0.1 only: the system tests and bench/ share this.

- `Database` (database.py): a throw-away PostgreSQL database beside the one the admin URL names
  (default: $DATABASE_URL's server), migrated as the superuser and used by the portal through its
  own least-privilege role, so a test can revoke the portal's rights or take the database away
  without touching anyone else's database or the shared server.
- The stand-in Requesty: in-process (`standin.StandIn(control=True)`, so a test can inject faults
  and read its calls) or `StandinProcess`, a child process whose threads do not share a GIL with
  the caller's client threads (the benchmarks).
- `Portal`: one `gunicorn -c gunicorn.conf.py` instance (gthread workers) with DEBUG off and the
  production settings, relaxed only where plain HTTP on loopback needs it; its JSON log and access
  log go to one file, which the leak sweep reads. More instances with other environment variables
  (a closed Requesty port, a kill point) can run beside the first, on the same database.
- `System`: all of them, torn down together by `close()` (also when start-up fails half-way).

A signed-in browser is `browser.Client`; the checks a run ends with are in `checks`.
"""

from __future__ import annotations

import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path

import requests

from .database import Database

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
TOKEN = "RELIABILITY-ADMIN-TOKEN-4e1f"  # the stand-in's well-known admin token for these runs
PASSWORD = "reliability-pass-8d2c"  # every harness user's password (a throw-away database)
TIMEOUT = (5, 60)  # (connect, read) for every request the harness makes: it can never hang on one
# The portal's Requesty timeouts here: short, so a scenario that waits one out costs 2 s, not 25.
REQUESTY_CONNECT_TIMEOUT, REQUESTY_READ_TIMEOUT = 0.5, 1.5


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


def manage(env: dict[str, str], *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """manage.py in a subprocess with exactly this environment."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        command = " ".join(args)
        raise RuntimeError(f"manage.py {command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


# --- processes, read from /proc -------------------------------------------------------------------
def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                if int(_stat(entry.name)[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU of a process, all its threads ("self" for this one); 0 once it is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            "REQUESTY_CONNECT_TIMEOUT": str(REQUESTY_CONNECT_TIMEOUT),
            "REQUESTY_READ_TIMEOUT": str(REQUESTY_READ_TIMEOUT),
            "GUNICORN_TIMEOUT": "30",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "EMAIL_URL": "consolemail://",  # error mails land in the log file, which is swept
            "ADMINS": "ops@example.com",
            "LOG_LEVEL": "DEBUG",  # urllib3 included: the sweep must see everything that is logged
            # No user hits a cap or the hourly limit; the checks still run (and cost what they cost).
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
        env = {**self.env, "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
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
        if proc is not None:
            _stop(proc, f"gunicorn {self.name}", signal.SIGINT)  # quick shutdown: nothing to drain

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not running")
        return self.proc.pid

    def workers(self) -> list[int]:
        return children(self.pid)

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

    def manage(self, *args: str, check: bool = True, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        """manage.py with this instance's environment (the same settings, database and Requesty)."""
        return manage({**self.env, **env}, *args, check=check, timeout=timeout)

    def reconcile(self, **env: str) -> subprocess.CompletedProcess:
        return self.manage("reconcile_keys", "--stale-minutes", "0", check=False, **env)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


def _stop(proc: subprocess.Popen, name: str, sig: int) -> None:
    """Stop a child we started in its own session: `sig`, then SIGKILL to its process group."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {proc.pid}) did not stop; killing its process group")
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
        proc.wait(timeout=10)


# --- the stand-in in a child process --------------------------------------------------------------
class StandinProcess:
    """The stand-in Requesty in its own process: `python -m standin --control` unless `command` says
    otherwise (any command that prints its http://127.0.0.1:<port> URL on its first line)."""

    def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.command = command or [sys.executable, "-m", "standin", "--host", "127.0.0.1", "--port", "0", "--control"]
        self.env = {**base_env(), "STANDIN_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 20) -> StandinProcess:
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 -- its stderr, closed by stop()
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self.errors, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                if match := re.search(r"http://127\.0\.0\.1:\d+", self.proc.stdout.readline().decode()):
                    self.base_url = match.group(0)
                    return self
        self.errors.seek(0)
        message = self.errors.read().decode(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"the stand-in did not start:\n{message}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop(proc, "the stand-in", signal.SIGTERM)
            proc.stdout.close()
            self.errors.close()


# --- the whole system ----------------------------------------------------------------------------------
USERS_CODE = """
import os
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
encoded = make_password(os.environ["HARNESS_PASSWORD"])  # hashed once: the users differ only by name
names = [n for n in os.environ["HARNESS_USERS"].split(",") if n]
admins = set(n for n in os.environ.get("HARNESS_ADMINS", "").split(",") if n)
User.objects.bulk_create(
    [User(username=n, email=f"{n}@example.com", password=encoded, is_superuser=n in admins, is_staff=n in admins)
     for n in names],
    ignore_conflicts=True,  # a reused database already has them
)
"""


class System:
    """Database + stand-in + portal instances, torn down together by close().

    `standin` is anything with start(), stop() and base_url (an in-process `StandIn` or a
    `StandinProcess`), started and stopped here; or `standin_url`, one nobody here manages (e.g. a
    closed port when no Requesty call is expected). Extra keyword arguments are environment
    variables for every portal instance (`LOG_LEVEL="INFO"`)."""

    def __init__(
        self,
        *,
        standin=None,
        standin_url: str | None = None,
        db_name: str | None = None,
        admin_url: str | None = None,
        reuse_db: bool = False,
        workdir: Path | None = None,
        **env: str,
    ) -> None:
        if (standin is None) == (standin_url is None):
            raise ValueError("give exactly one of standin or standin_url")
        self.standin = standin
        self._standin_url = standin_url
        self.stack = ExitStack()
        self.tmp: Path | None = None
        if workdir is None:
            workdir = self.tmp = Path(tempfile.mkdtemp(prefix="portal-system-"))
        self.workdir = workdir
        self.db = Database(admin_url or admin_database_url(), db_name or f"reliability_{os.getpid()}")
        self.reuse_db = reuse_db
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

    def start(self, users: list[str] = (), admins: list[str] = (), *, serve: bool = True) -> System:
        """Database, migrations, static files, users (password `PASSWORD`), the stand-in, and with
        `serve` the first gunicorn instance (`self.portal`)."""
        try:
            if self.standin is not None:
                self.standin.start()
                self.stack.callback(self.standin.stop)
            if not self.reuse_db:
                self.stack.callback(self.db.drop)
            self.db.create(reuse=self.reuse_db)
            self.base_env = self.env()
            started = time.monotonic()
            self.manage("migrate", "--noinput", "-v0", owner=True)
            self.db.grant_app_role()
            self.manage("collectstatic", "--noinput", "-v0")
            if users or admins:
                accounts = {"HARNESS_USERS": ",".join([*users, *admins]), "HARNESS_ADMINS": ",".join(admins)}
                self.manage("shell", "-c", USERS_CODE, owner=True, HARNESS_PASSWORD=PASSWORD, **accounts)
            log(f"database {self.db.name} migrated, static collected, users made in {time.monotonic() - started:.1f}s")
            if serve:
                self.portal = self.add_portal("portal")
        except BaseException:
            self.close()
            raise
        return self

    def add_portal(self, name: str, **overrides: str) -> Portal:
        """Another gunicorn instance on the same database and stand-in, with other settings; it
        shares SECRET_KEY and AUDIT_HMAC_KEY with the first, so sessions work on both."""
        keep = {k: self.base_env[k] for k in ("SECRET_KEY", "AUDIT_HMAC_KEY")}
        portal = Portal(name, self.env(**{**keep, **overrides}), self.workdir)
        self.portals.append(portal)
        self.stack.callback(portal.stop)
        started = time.monotonic()
        portal.start()
        log(f"gunicorn {name} up on {portal.base_url} in {time.monotonic() - started:.1f}s")
        return portal

    def manage(self, *args: str, owner: bool = False, timeout: float = 300, **env: str) -> str:
        """manage.py with the portals' environment; `owner` connects as the database's owner (DDL)."""
        database = {"DATABASE_URL": self.db.owner_url} if owner else {}
        return manage({**self.base_env, **database, **env}, *args, timeout=timeout).stdout

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
