"""A stand-in Requesty: the documented key-management API over real HTTP, with fault injection.

Why a real server rather than mocking ``requests``: the portal's failure handling depends on what
actually happens on the wire (timeouts after the request was sent, connection resets, half-sent
bodies, HTML from a proxy). Only a socket can produce those honestly. State lives in memory behind
one lock; the server is stdlib-only so it starts in milliseconds inside a test and needs nothing
extra in the sandbox.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import socket
import struct
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

LEVELS = frozenset({"none", "read", "write"})
DEFAULT_PERMISSIONS = {"manage": "none", "completions": "write"}
ADMIN_ID = "00000000-0000-4000-8000-000000000001"
ADMIN_USER = {"id": "00000000-0000-4000-8000-0000000000a1", "email": "admin@standin.invalid"}
MAX_BODY = 1 << 20
JSON_CT = "application/json"


def default_secret() -> str:
    """A fresh secret shaped like Requesty's; tests replace it with a recognisable canary."""
    return "rqsty-sk-" + secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True for names/addresses that cannot be reached from another machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(message: str) -> dict[str, Any]:
    return {"error": {"origin": "router", "message": message}}


def _json_default(value: object) -> object:
    """Money is Decimal inside; JSON has no decimal type. Integral amounts become ints; others a
    float, whose shortest repr reproduces any amount of up to 15 significant digits exactly."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _encode(payload: Any) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, default=_json_default).encode()


class Call(NamedTuple):
    """One request the stand-in received. Headers are deliberately not kept: the Authorization
    value must never end up anywhere a test might print."""

    method: str
    path: str
    body: dict[str, Any] | None


@dataclass(frozen=True)
class Fault:
    """A misbehaviour applied to one matching request. Build with the classmethods."""

    kind: str
    code: int = 0
    body: Any = None
    content_type: str = JSON_CT
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    gate: threading.Barrier | None = field(default=None, compare=False, repr=False)

    @classmethod
    def status(
        cls, code: int, body: Any = None, content_type: str = JSON_CT, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Answer ``code`` without performing the action (proxy error, 4xx, 429...)."""
        return cls("status", code, body, content_type, dict(headers or {}))

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep before doing anything, then behave normally."""
        return cls("delay", seconds=seconds)

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then reset the connection; nothing happens upstream."""
        return cls("reset")

    @classmethod
    def after_action_status(
        cls, code: int, body: Any = None, content_type: str = JSON_CT, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Perform the action, then answer ``code`` (the key exists though the client sees 5xx)."""
        return cls("after_action_status", code, body, content_type, dict(headers or {}))

    @classmethod
    def after_action_reset(cls) -> Fault:
        """Perform the action, then reset: created upstream, response lost."""
        return cls("after_action_reset")

    @classmethod
    def after_action_delay(cls, seconds: float) -> Fault:
        """Perform the action, then sleep before answering (client read timeout after create)."""
        return cls("after_action_delay", seconds=seconds)

    @classmethod
    def after_action_body(
        cls, body: str | bytes | Callable[[dict | None], str | bytes], status: int = 201, content_type: str = JSON_CT
    ) -> Fault:
        """Perform the action, then answer this raw body; a callable gets the real response."""
        return cls("after_action_body", status, body, content_type)

    @classmethod
    def trickle_headers(cls, interval: float) -> Fault:
        """Perform the action, then send the status line and headers one byte every `interval`."""
        return cls("trickle_headers", seconds=interval)

    @classmethod
    def together(cls, parties: int = 2, seconds: float = 2.0) -> Fault:
        """Hold each matching request until ``parties`` of them are in flight at once, then behave
        normally; if they are not within ``seconds``, answer 504 without acting. Calls a client
        sends side by side pass, calls sent one after the other fail: overlap proved, not timed."""
        return cls("together", seconds=seconds, gate=threading.Barrier(int(parties)))

    @classmethod
    def trickle(cls, interval: float) -> Fault:
        """Perform the action, send headers at once, then the body one byte per ``interval``."""
        return cls("trickle", seconds=interval)


class Reply(NamedTuple):
    status: int
    payload: Any = None  # dict (JSON), str/bytes (raw) or None (empty body)
    content_type: str = JSON_CT
    headers: Mapping[str, str] = {}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Pending:
    fault: Fault
    method: str | None
    path: str | None
    times: int

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or path.startswith(self.path)
        )


def _money(value: Any, name: str = "monthly_limit") -> Decimal:
    """Requesty wants a JSON number >= 0; strings and booleans are client bugs we must expose."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ApiError(400, f"{name} must be a number")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ApiError(400, f"{name} must be a non-negative number")
    return amount


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be an RFC3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an RFC3339 timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/v1/manage/apikey"), "create"),
    ("GET", re.compile(r"/v1/manage/apikey"), "list"),
    ("GET", re.compile(r"/v1/manage/apikey/([^/]+)"), "detail"),
    ("DELETE", re.compile(r"/v1/manage/apikey/([^/]+)"), "delete"),
    ("GET", re.compile(r"/v1/manage/apikey/([^/]+)/usage"), "usage"),
    ("POST", re.compile(r"/v1/manage/apikey/([^/]+)/limit"), "limit"),
    ("POST", re.compile(r"/v1/manage/apikey/([^/]+)/label"), "label"),
    ("POST", re.compile(r"/v1/manage/apikey/([^/]+)/expiry"), "expiry"),
    ("GET", re.compile(r"/v1/manage/org"), "org"),
    ("GET", re.compile(r"/v1/manage/org/usage"), "org_usage"),
]
FAULT_KINDS = frozenset(name for name, attr in vars(Fault).items() if isinstance(attr, classmethod))


class StandIn:
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
        self._faults: list[_Pending] = []
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> StandIn:
        self._stopping.clear()
        self._httpd = _Server((self.host, self.port), _Handler, self)
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
            return _fake_usage(key_id, period)
        recorded = self._keys[key_id]["usage"] if key_id in self._keys else {}
        prefix = {"hour": None, "day": period[:10], "month": period[:7]}[resolution]
        spend, requests = Decimal(0), 0
        for day, entry in recorded.items():
            if prefix is not None and day.startswith(prefix):
                spend, requests = spend + entry["spend"], requests + entry["requests"]
        return {"total_requests": requests, "spend": spend, "input_tokens": 0, "output_tokens": 0}

    def inject(self, fault: Fault, method: str | None = None, path: str | None = None, times: int = 1) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Pending(fault, method, path, times))

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

    def _dispatch(self, method: str, path: str, query: str, auth: str | None, raw: bytes) -> Reply:
        try:
            if not path.startswith("/v1/"):
                raise ApiError(404, "not found")
            self._authenticate(auth)
            known_path = False
            for route_method, pattern, name in _ROUTES:
                match = pattern.fullmatch(path)
                if match:
                    known_path = True
                    if route_method == method:
                        with self._lock:
                            return getattr(self, f"_api_{name}")(*match.groups(), raw=raw, query=query)
            raise ApiError(405 if known_path else 404, "method not allowed" if known_path else "not found")
        except ApiError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            return Reply(exc.status, _error(exc.message), headers=headers)
        except Exception as exc:  # noqa: BLE001 -- a stand-in bug: answer like a broken upstream, keep serving
            traceback.print_exc()  # no locals are printed, so no token or secret can leak here
            return Reply(500, _error(f"stand-in internal error: {type(exc).__name__}"))

    def _authenticate(self, auth: str | None) -> None:
        scheme, _, token = (auth or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing bearer token")
        if not secrets.compare_digest(token.strip().encode(), self.admin_token.encode()):
            raise ApiError(403, "invalid API key")

    @staticmethod
    def _json_object(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw, parse_float=Decimal)
        except ValueError:
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def _key(self, key_id: str) -> dict[str, Any]:
        if key_id not in self._keys:
            raise ApiError(404, "API key not found")
        return self._keys[key_id]

    def _live_key(self, key_id: str) -> dict[str, Any]:
        """A key that may still be changed: Requesty refuses every update of an expired key
        (its limit, labels and expiry alike), so an expired key can never be revived."""
        key = self._key(key_id)
        expires_at = key["expires_at"]
        if expires_at is not None and _timestamp(expires_at, "expires_at") <= datetime.now(UTC):
            raise ApiError(400, "API key has expired and cannot be updated")
        return key

    # ---- endpoints (called with the lock held) -----------------------------------------------
    def _api_create(self, raw: bytes, query: str) -> Reply:
        body = self._json_object(raw)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name is required")
        if "monthly_limit" not in body:
            raise ApiError(400, "monthly_limit is required")
        limit = _money(body["monthly_limit"])
        permissions = DEFAULT_PERMISSIONS
        if "permissions" in body:
            permissions = body["permissions"]
            if not isinstance(permissions, dict) or any(
                not isinstance(permissions.get(f), str) or permissions.get(f) not in LEVELS
                for f in ("manage", "completions")
            ):
                raise ApiError(400, "permissions.manage and permissions.completions must be one of none, read, write")
            permissions = {f: permissions[f] for f in ("manage", "completions")}
        key = self.add_key(name, limit, permissions)
        return Reply(201, {"api_key_id": key["id"], "api_key": key["api_key"]})

    def _api_list(self, raw: bytes, query: str) -> Reply:
        """Every key of the organization, the admin token's own key included (as Requesty lists it)."""
        fields = ("id", "name", "monthly_limit", "monthly_spend", "permissions", "labels", "created_by")
        own = {
            "id": ADMIN_ID,
            "name": "stand-in admin token",
            "monthly_limit": 0,
            "monthly_spend": 0,
            "permissions": {"manage": "write", "completions": "none"},
            "labels": {},
            "created_by": {"id": "stand-in", "email": "admin@example.com"},
        }
        return Reply(200, {"keys": [own, *({f: k[f] for f in fields} for k in self._keys.values())]})

    def _api_detail(self, key_id: str, raw: bytes, query: str) -> Reply:
        if key_id == "self":
            return Reply(
                200,
                {
                    "id": ADMIN_ID,
                    "name": "stand-in admin token",
                    "logging": False,
                    "monthly_spend": 0,
                    "monthly_limit": 0,
                    "permissions": {"manage": "write", "completions": "none"},
                },
            )
        key = self._key(key_id)
        return Reply(
            200,
            {
                "id": key["id"],
                "name": key["name"],
                "logging": False,
                "monthly_spend": key["monthly_spend"],
                "monthly_limit": key["monthly_limit"],
                "permissions": key["permissions"],
            },
        )

    def _api_delete(self, key_id: str, raw: bytes, query: str) -> Reply:
        del self._keys[self._key(key_id)["id"]]
        return Reply(204)

    def _api_limit(self, key_id: str, raw: bytes, query: str) -> Reply:
        key = self._live_key(key_id)
        body = self._json_object(raw)
        key["monthly_limit"] = _money(body.get("monthly_limit"))
        return Reply(204)

    def _api_label(self, key_id: str, raw: bytes, query: str) -> Reply:
        key = self._live_key(key_id)
        labels = self._json_object(raw).get("labels")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ApiError(400, "labels must be an object of strings")
        key["labels"] = dict(labels)
        return Reply(204)

    def _api_expiry(self, key_id: str, raw: bytes, query: str) -> Reply:
        key = self._live_key(key_id)
        body = self._json_object(raw)
        if "expires_at" not in body:
            raise ApiError(400, "expires_at is required")
        value = body["expires_at"]
        if value is not None:
            _timestamp(value, "expires_at")
        key["expires_at"] = value
        return Reply(204)

    def _api_usage(self, key_id: str, raw: bytes, query: str) -> Reply:
        if key_id != "self":
            self._key(key_id)
        periods, resolution, _ = _usage_query(query)
        return Reply(200, {"usage": {p: self._usage_of(key_id, p, resolution) for p in periods}})

    def _api_org_usage(self, raw: bytes, query: str) -> Reply:
        """The organization's usage; with group_by=api_key_id each period lists every key that had
        requests (`grouped_data`), money as strings, as Requesty's CLI tests show."""
        periods, resolution, group_by = _usage_query(query)
        usage = {}
        for period in periods:
            rows = [(key_id, self._usage_of(key_id, period, resolution)) for key_id in self._keys]
            rows = [(key_id, figures) for key_id, figures in rows if figures["total_requests"]]
            entry = {
                "total_requests": sum(f["total_requests"] for _, f in rows),
                "spend": str(sum((f["spend"] for _, f in rows), Decimal(0))),
            }
            if "api_key_id" in group_by:
                entry["grouped_data"] = [
                    {
                        "group_by_values": {"api_key_id": key_id},
                        "total_requests": f["total_requests"],
                        "spend": str(f["spend"]),
                    }
                    for key_id, f in rows
                ]
            usage[period] = entry
        return Reply(200, {"usage": usage})

    def _api_org(self, raw: bytes, query: str) -> Reply:
        return Reply(200, {"name": "Stand-in Org", "balance": 1000})

    # ---- control API (loopback, no auth, only when control=True) --------------------------------
    def _control(self, method: str, path: str, raw: bytes) -> Reply:
        try:
            if (method, path) == ("GET", "/_standin/state"):
                with self._lock:
                    keys = [{k: v for k, v in key.items() if k != "api_key"} for key in self._keys.values()]
                    return Reply(
                        200,
                        {"keys": keys, "calls": len(self._calls), "faults": len(self._faults), "latency": self.latency},
                    )
            if method != "POST" or path not in ("/_standin/reset", "/_standin/latency", "/_standin/faults"):
                raise ApiError(404, "not found")
            if path == "/_standin/reset":
                self.reset()
                return Reply(204)
            body = self._json_object(raw)
            if path == "/_standin/latency":
                seconds = body.get("seconds")
                if isinstance(seconds, bool) or not isinstance(seconds, (int, Decimal)) or seconds < 0:
                    raise ApiError(400, "seconds must be a non-negative number")
                self.latency = float(seconds)
                return Reply(204)
            kind, args = body.get("kind"), body.get("args") or {}
            if kind not in FAULT_KINDS or not isinstance(args, dict):
                raise ApiError(400, f"kind must be one of {sorted(FAULT_KINDS)}; args an object")
            args = {k: float(v) if isinstance(v, Decimal) else v for k, v in args.items()}
            try:
                fault = getattr(Fault, kind)(**args)
                self.inject(fault, body.get("method"), body.get("path"), int(body.get("times", 1)))
            except (TypeError, ValueError) as exc:
                raise ApiError(400, f"bad fault: {exc}") from None
            return Reply(204)
        except ApiError as exc:
            return Reply(exc.status, _error(exc.message))


def _usage_query(query: str) -> tuple[list[str], str, list[str]]:
    """The periods, resolution and group_by of a usage query, checked as Requesty checks them."""
    parsed = parse_qs(query)
    params = {k: v[-1] for k, v in parsed.items()}
    if "start" not in params:
        raise ApiError(400, "start is required")
    start = _timestamp(params["start"], "start")
    end = _timestamp(params["end"], "end") if "end" in params else start + timedelta(days=1)
    if end <= start or end - start > timedelta(days=100):
        raise ApiError(400, "end must be after start and within 100 days")
    resolution = params.get("resolution", "day")
    if resolution not in ("hour", "day", "month"):
        raise ApiError(400, "resolution must be hour, day or month")
    return _periods(start, end, resolution), resolution, parsed.get("group_by", [])


def _periods(start: datetime, end: datetime, resolution: str) -> list[str]:
    if resolution == "hour":
        cursor, fmt = start.replace(minute=0, second=0, microsecond=0), "%Y-%m-%dT%H:00:00Z"
    elif resolution == "day":
        cursor, fmt = start.replace(hour=0, minute=0, second=0, microsecond=0), "%Y-%m-%d"
    else:
        cursor, fmt = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0), "%Y-%m-%d"
    periods = []
    while cursor < end:
        periods.append(cursor.strftime(fmt))
        if resolution == "hour":
            cursor += timedelta(hours=1)
        elif resolution == "day":
            cursor += timedelta(days=1)
        else:
            cursor = (cursor + timedelta(days=32)).replace(day=1)
    return periods


def _fake_usage(key_id: str, period: str) -> dict[str, Any]:
    """Deterministic per (key, period), so tests and screenshots are reproducible."""
    digest = hashlib.sha256(f"{key_id}|{period}".encode()).digest()
    requests = int.from_bytes(digest[:2]) % 500
    input_tokens = requests * (50 + digest[2])
    output_tokens = requests * (20 + digest[3])
    spend = Decimal(input_tokens) * Decimal("0.000001") + Decimal(output_tokens) * Decimal("0.000003")
    return {"total_requests": requests, "spend": spend, "input_tokens": input_tokens, "output_tokens": output_tokens}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, standin: StandIn) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_open_connections(self) -> None:
        """Kept-alive client connections would otherwise keep handler threads blocked in read."""
        with self.connections_lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-answer is expected here (timeouts are the point); stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms stalls
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request logs are noise in test output and could carry query strings."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _handle(self) -> None:
        standin = self.server.standin
        url = urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(Reply(400, _error("bad Content-Length")))
            return
        raw = self.rfile.read(length) if length else b""
        if standin.control and url.path.startswith("/_standin/"):
            self._send(standin._control(self.command, url.path, raw))
            return
        try:
            parsed = json.loads(raw, parse_float=Decimal) if raw else None
        except ValueError:
            parsed = None
        standin._record(Call(self.command, url.path, parsed if isinstance(parsed, dict) else None))
        standin._sleep(standin.latency)

        fault = standin._take_fault(self.command, url.path)
        kind = fault.kind if fault else None
        if kind == "status":
            body = fault.body if fault.body is not None else _error(f"stand-in injected {fault.code}")
            self._send(Reply(fault.code, body, fault.content_type, fault.headers))
            return
        if kind == "reset":
            self._abort()
            return
        if kind == "together":
            try:
                fault.gate.wait(fault.seconds)
            except threading.BrokenBarrierError:  # timed out waiting (or a partner did): never together
                self._send(Reply(504, _error("stand-in: the calls held together were not in flight at once")))
                return
        if kind == "delay":
            standin._sleep(fault.seconds)

        reply = standin._dispatch(self.command, url.path, url.query, self.headers.get("Authorization"), raw)

        if kind == "after_action_status":
            body = fault.body if fault.body is not None else _error(f"stand-in injected {fault.code}")
            reply = Reply(fault.code, body, fault.content_type, fault.headers)
        elif kind == "after_action_reset":
            self._abort()
            return
        elif kind == "after_action_delay":
            standin._sleep(fault.seconds)
        elif kind == "after_action_body":
            body = fault.body(reply.payload) if callable(fault.body) else fault.body
            reply = Reply(fault.code, body, fault.content_type)
        elif kind == "trickle":
            self._send(reply, trickle=fault.seconds)
            return
        elif kind == "trickle_headers":
            self._send_trickled_head(reply, fault.seconds)
            return
        self._send(reply)

    def _send(self, reply: Reply, trickle: float = 0.0) -> None:
        data = _encode(reply.payload)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if data or reply.status not in (204, 304):
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not trickle:
                self.wfile.write(data)
                return
            for i in range(len(data)):
                self.server.standin._sleep(trickle)
                if self.server.standin._stopping.is_set():
                    raise ConnectionAbortedError
                self.wfile.write(data[i : i + 1])
        except OSError:
            self.close_connection = True  # the client gave up; nothing to tell anyone

    def _send_trickled_head(self, reply: Reply, interval: float) -> None:
        data = _encode(reply.payload)
        head = (
            f"HTTP/1.1 {reply.status} X\r\nContent-Type: {reply.content_type}\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.close_connection = True
        try:
            for i in range(len(head)):
                self.server.standin._sleep(interval)
                if self.server.standin._stopping.is_set():
                    return
                self.wfile.write(head[i : i + 1])
                self.wfile.flush()
            self.wfile.write(data)
        except OSError:
            pass

    def _abort(self) -> None:
        """Close with SO_LINGER 0 so the kernel sends RST: the client sees a reset, not an EOF."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()  # drops the makefile reference so close() really closes the socket
        self.connection.close()
