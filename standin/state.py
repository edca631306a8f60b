"""A stand-in Requesty: the documented key-management API over real HTTP, with fault injection.

`StandIn` is the in-memory organization (keys, the calls received, pending faults; all behind one
lock), its lifecycle (start, stop, reset) and the helpers tests call. Its parts by job:

- api.py: the documented endpoints; control.py: the `/_standin/` control API;
- server.py: the HTTP server and handler, where faults are applied on the wire;
- faults.py: the faults; usage.py: usage figures; protocol.py: calls, replies, errors, JSON.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

from . import usage
from .api import ADMIN_USER, DEFAULT_PERMISSIONS, RequestyApi
from .control import ControlApi
from .faults import Fault, Pending
from .protocol import Call
from .server import Handler, Server, is_loopback


def default_secret() -> str:
    """A fresh secret shaped like Requesty's; tests replace it with a recognisable canary."""
    return "rqsty-sk-" + secrets.token_urlsafe(32)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class StandIn(RequestyApi, ControlApi):
    """In-memory Requesty. ``start()`` serves it on a daemon thread; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_token: str = "standin-admin-token",  # noqa: S107 -- a fake upstream's well-known token
        latency: float = 0.0,
        control: bool = False,
        fake_usage: bool = True,
    ) -> None:
        if not admin_token:
            raise ValueError("admin_token must be non-empty")
        if control and not is_loopback(host):
            raise ValueError("the control API has no auth: bind it to loopback only")
        self.host, self.port = host, port
        self.admin_token = admin_token
        self.control = control
        self.latency = self._initial_latency = latency
        # Usage: made-up but deterministic figures for every key and day (the sandbox's charts), or,
        # with fake_usage off, only what tests recorded with record_usage (known spend, idle keys).
        self.fake_usage = self._initial_fake_usage = fake_usage
        self.secret_factory: Callable[[], str] = default_secret
        self._lock = threading.RLock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._calls: list[Call] = []
        self._faults: list[Pending] = []
        self._stopping = threading.Event()
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> StandIn:
        self._stopping.clear()
        self._httpd = Server((self.host, self.port), Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping faults and cut kept-alive connections so nothing lingers."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_open_connections()
        httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("stand-in not started")
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self._keys.clear()
            self._calls.clear()
            self._faults.clear()
            self.latency = self._initial_latency
            self.fake_usage = self._initial_fake_usage

    # ---- test helpers --------------------------------------------------------------------------
    @property
    def keys(self) -> dict[str, dict[str, Any]]:
        """Snapshot of the live keys: a new outer dict (safe to iterate), the same inner dicts."""
        with self._lock:
            return dict(self._keys)

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, path_prefix: str) -> list[Call]:
        return [c for c in self.calls if c.method == method.upper() and c.path.startswith(path_prefix)]

    def add_key(
        self,
        name: str,
        monthly_limit: Decimal = Decimal(10),
        permissions: Mapping[str, str] | None = None,
        monthly_spend: Decimal = Decimal(0),
    ) -> dict[str, Any]:
        key = {
            "id": str(uuid.uuid4()),
            "name": name,
            "api_key": self.secret_factory(),
            "monthly_limit": Decimal(monthly_limit),
            "monthly_spend": Decimal(monthly_spend),
            "permissions": dict(permissions or DEFAULT_PERMISSIONS),
            "labels": {},
            "usage": {},  # day (YYYY-MM-DD) -> {"spend": Decimal, "requests": int}, from record_usage
            "expires_at": None,
            "created_at": _now(),
            "created_by": dict(ADMIN_USER),
        }
        with self._lock:
            self._keys[key["id"]] = key
        return key

    def record_usage(self, key_id: str, day: str, spend: Decimal | str, requests: int = 1) -> None:
        """Add spend and requests to a key's day (YYYY-MM-DD); a day of the current month also adds
        to its `monthly_spend`, as Requesty's figures would agree."""
        with self._lock:
            key = self._keys[key_id]
            entry = key["usage"].setdefault(day, {"spend": Decimal(0), "requests": 0})
            entry["spend"] += Decimal(spend)
            entry["requests"] += requests
            if day[:7] == datetime.now(UTC).strftime("%Y-%m"):
                key["monthly_spend"] += Decimal(spend)

    def _usage_of(self, key_id: str, period: str, resolution: str) -> dict[str, Any]:
        if self.fake_usage:
            return usage.fake_figures(key_id, period)
        recorded = self._keys[key_id]["usage"] if key_id in self._keys else {}
        return usage.recorded_figures(recorded, period, resolution)

    def inject(self, fault: Fault, method: str | None = None, path: str | None = None, times: int = 1) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(Pending(fault, method, path, times))

    # ---- internals used by the handler -------------------------------------------------------
    def _sleep(self, seconds: float) -> None:
        """Interruptible by stop(), so a test teardown never waits out a long injected delay."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for pending in self._faults:
                if pending.matches(method, path):
                    pending.times -= 1
                    if pending.times == 0:
                        self._faults.remove(pending)
                    return pending.fault
        return None
