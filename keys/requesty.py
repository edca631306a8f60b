"""The Requesty key-management client: the rest of the code never calls Requesty but through here.

Strict in what it sends, tolerant in what it reads (see docs/requesty-api.md). Every failure
becomes one of a few typed errors, split by what the caller may conclude:

- `Rejected` and its subclasses: Requesty definitely did not act (4xx, or the request never left).
- `OutcomeUnknown` and its subclasses: Requesty may have acted (timeout after sending, 5xx,
  reset connection, malformed 2xx). The create call is never retried automatically, because
  Requesty has no idempotency key.

Errors carry the upstream status and a short, plain message; never the token, never a secret.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from portal import http

# Never picks up proxies or credentials from the environment/.netrc for the admin token's calls
# (portal/http.py); every call below passes its own (connect, read) timeouts as well.
_session = http.session(timeout=lambda: (settings.REQUESTY_CONNECT_TIMEOUT, settings.REQUESTY_READ_TIMEOUT))

_MAX_BODY = 1_000_000
_LEVELS = ("none", "read", "write")


# --- Errors ---------------------------------------------------------------------------------------
class RequestyError(Exception):
    """Base class. `status` is the upstream HTTP status, or None if there was no response."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class Rejected(RequestyError):
    """Requesty definitely did not act."""


class NotSent(Rejected):
    """The request never left: connection refused, DNS failure, connect timeout."""


class BadRequest(Rejected):
    """400: Requesty refused the body."""


class AuthFailed(Rejected):
    """401/403: the admin token is missing, invalid, revoked or lacks `manage` rights."""


class NotFound(Rejected):
    """404: unknown key id."""


class RateLimited(Rejected):
    def __init__(self, message: str, status: int | None = 429, retry_after: int | None = None):
        super().__init__(message, status)
        self.retry_after = retry_after


class OutcomeUnknown(RequestyError):
    """Requesty may or may not have acted."""


class Unavailable(OutcomeUnknown):
    """5xx, or a reset connection / timeout after the request was sent."""


class MalformedResponse(OutcomeUnknown):
    """A 2xx whose body is not what the API documents.

    `api_key_id` is set when a usable key id could still be read, so the caller can compensate.
    """

    def __init__(self, message: str, status: int | None = None, api_key_id: str | None = None):
        super().__init__(message, status)
        self.api_key_id = api_key_id


# --- Results --------------------------------------------------------------------------------------
class Secret:
    """A value shown once. Its repr is masked, so tracebacks, error e-mails and debug pages that
    print local variables never contain it; templates call `reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True)
class CreatedKey:
    api_key_id: str
    api_key: Secret


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    monthly_limit: Decimal | None
    monthly_spend: Decimal | None
    permissions: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)


# --- Parsing helpers ------------------------------------------------------------------------------
def parse_money(value: Any) -> Decimal | None:
    """Money arrives as a JSON number or a numeric string; both are accepted, nothing else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, (float, str)):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return amount if amount.is_finite() else None
    return None


def _error_message(response: requests.Response) -> str:
    """Requesty's own error message if the body is its JSON error shape; else a generic phrase.

    A proxy may answer with an HTML page: it is never echoed."""
    try:
        data = json.loads(response.content[:10_000])
        message = data["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
    return str(message)[:200] if message else f"HTTP {response.status_code}"


def _is_requesty_error(response: requests.Response) -> bool:
    try:
        data = json.loads(response.content[:10_000])
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), dict)


def _retry_after(response: requests.Response) -> int | None:
    try:
        return max(0, int(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


# --- Transport ------------------------------------------------------------------------------------
# A hard wall-clock deadline per call. Socket timeouts apply to each read, so a server that sends
# one byte a second (in the headers or the body) would never trip them, and gunicorn's threaded
# workers do not time requests out. A watchdog timer shuts the call's socket down at the deadline.
_watch = threading.local()


class _Watched:
    """Connection mixin: resolve the host name within the connect timeout, and register the socket
    of each request with the current call's watchdog."""

    def connect(self):
        self._resolve_within_deadline()
        super().connect()
        _register(self)

    def _resolve_within_deadline(self) -> None:
        """Socket timeouts and the watchdog start after name resolution, so a hanging resolver
        would hold the worker thread for as long as it likes: resolve first, bounded by the connect
        timeout, and connect to the address found. The name stays the TLS server name (SNI and
        certificate check); the Host header is set by `_call`."""
        name = getattr(self, "portal_hostname", None) or self.host
        self.portal_hostname = name
        try:
            ipaddress.ip_address(name.strip("[]"))
            return  # an address already
        except ValueError:
            pass
        try:
            address = _resolve(name, self.port, settings.REQUESTY_CONNECT_TIMEOUT)
        except OSError as exc:
            raise urllib3.exceptions.NameResolutionError(name, self, exc) from None
        if isinstance(self, urllib3.connection.HTTPSConnection) and self.server_hostname is None:
            self.server_hostname = name
        self.host = address

    def request(self, *args, **kwargs):
        _register(self)  # a kept-alive connection skips connect()
        return super().request(*args, **kwargs)


# Resolvers run here, so a hung one holds one of these threads, never a request's; when all are
# hung, further resolutions time out too (the call is "never sent").
_resolvers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="requesty-resolve")


def _resolve(name: str, port: int, timeout: float) -> str:
    """An address for `name` (IPv4 first, as most services answer both), within `timeout` seconds."""
    future = _resolvers.submit(socket.getaddrinfo, name, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        raise socket.gaierror(socket.EAI_AGAIN, f"name resolution took longer than {timeout:g} s") from None
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return infos[0][4][0]


def _register(conn) -> None:
    conns = getattr(_watch, "conns", None)
    if conns is not None:
        conns.append(conn)


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# One kept-alive connection per worker thread (gunicorn.conf.py: GUNICORN_THREADS, default 16);
# requests' default pool of 10 made busy workers discard and reopen connections.
_session.mount("http://", _WatchedAdapter(pool_maxsize=64))
_session.mount("https://", _WatchedAdapter(pool_maxsize=64))


@contextmanager
def _deadline(seconds: float):
    """Yields an Event that is set if the deadline struck (and the call's sockets were cut)."""
    conns: list = []
    struck = threading.Event()

    def cut() -> None:
        struck.set()
        for conn in list(conns):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    _watch.conns = conns
    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield struck
    finally:
        timer.cancel()
        _watch.conns = None


@sensitive_variables()
def _call(
    method: str, path: str, body: dict | None = None, params: dict | None = None, max_body: int = _MAX_BODY
) -> tuple[int, bytes]:
    """One HTTP call: connect and read timeouts, and connect + read as a hard overall deadline."""
    connect, read = settings.REQUESTY_CONNECT_TIMEOUT, settings.REQUESTY_READ_TIMEOUT
    headers = {
        "Authorization": f"Bearer {settings.REQUESTY_ADMIN_TOKEN}",
        "Accept": "application/json",
        # Explicit: the connection may be to the address resolved for the name (_Watched).
        "Host": urlsplit(settings.REQUESTY_BASE_URL).netloc,
    }
    with _deadline(connect + read) as struck:
        try:
            response = _session.request(
                method,
                settings.REQUESTY_BASE_URL + path,
                json=body,
                params=params,
                headers=headers,
                timeout=(connect, read),
                stream=True,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise NotSent("Requesty could not be reached (connect timeout).") from _plain(exc)
        except requests.exceptions.ReadTimeout as exc:
            raise Unavailable("Requesty did not answer in time.") from _plain(exc)
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise NotSent("Requesty could not be reached.") from _plain(exc)
            if struck.is_set():
                raise Unavailable("Requesty answered too slowly.") from _plain(exc)
            raise Unavailable("The connection to Requesty broke before it answered.") from _plain(exc)
        except requests.exceptions.RequestException as exc:
            raise Unavailable("The call to Requesty failed.") from _plain(exc)

        with response:
            chunks, size = [], 0
            try:
                while chunk := response.raw.read1(8192, decode_content=True):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > max_body:
                        raise MalformedResponse("Requesty's answer was too large.", response.status_code)
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise Unavailable("The connection to Requesty broke mid-answer.", response.status_code) from _plain(exc)
            if struck.is_set():
                # The socket was cut mid-body: what arrived is a truncated answer.
                raise Unavailable("Requesty answered too slowly.", response.status_code)
            response._content = b"".join(chunks)
            status = response.status_code
            if 200 <= status < 300:
                return status, response.content
            _raise_for_status(response)
    raise AssertionError("unreachable")  # pragma: no cover


def _raise_for_status(response: requests.Response) -> None:
    status = response.status_code
    if status == 400:
        raise BadRequest(_error_message(response), status)
    if status in (401, 403):
        raise AuthFailed(_error_message(response), status)
    if status == 404:
        if _is_requesty_error(response):
            raise NotFound(_error_message(response), status)
        # A proxy's or wrong base URL's 404 page says nothing about the key: never "gone".
        raise Unavailable("Requesty answered 404 without its own error body.", status)
    if status == 429:
        raise RateLimited(_error_message(response), status, _retry_after(response))
    if 400 <= status < 500:
        raise Rejected(_error_message(response), status)
    # 3xx (no redirects are followed: the token must not travel elsewhere) and 5xx.
    raise Unavailable(f"Requesty answered HTTP {status}.", status)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the TCP connection was never established, so nothing was sent."""
    u3 = urllib3.exceptions
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the real cause
    return isinstance(reason, (u3.NewConnectionError, u3.NameResolutionError, u3.ConnectTimeoutError))


def _plain(exc: Exception) -> Exception:
    """Chain a message-only copy: urllib3 errors can hold connection objects and request data."""
    return RuntimeError(type(exc).__name__)


def _json_number(amount: Decimal) -> int | float:
    """Money goes out as a JSON number. Amounts have at most 2 decimal places, which a float's
    shortest repr reproduces exactly (12.34 -> 12.34); whole amounts go out as integers."""
    return int(amount) if amount == amount.to_integral() else float(amount)


def _json(content: bytes, status: int) -> Any:
    try:
        return json.loads(content, parse_float=Decimal)
    except ValueError:
        raise MalformedResponse("Requesty's answer was not JSON.", status) from None


# --- API ------------------------------------------------------------------------------------------
@sensitive_variables()
def create_key(name: str, monthly_limit: Decimal, permissions: dict[str, str]) -> CreatedKey:
    """POST /v1/manage/apikey. Never retried: a retry could mint a second key."""
    if set(permissions) != {"manage", "completions"} or not set(permissions.values()) <= set(_LEVELS):
        raise ValueError("permissions must name both manage and completions with a valid level")
    body = {"name": name, "monthly_limit": _json_number(monthly_limit), "permissions": dict(permissions)}
    status, content = _call("POST", "/v1/manage/apikey", body)
    data = _json(content, status)
    key_id = data.get("api_key_id") if isinstance(data, dict) else None
    secret = data.get("api_key") if isinstance(data, dict) else None
    valid_id = _as_uuid(key_id)
    if valid_id is None:
        raise MalformedResponse("Requesty's answer had no valid key id.", status)
    if not isinstance(secret, str) or not secret.strip():
        raise MalformedResponse("Requesty's answer had no key.", status, api_key_id=valid_id)
    return CreatedKey(api_key_id=valid_id, api_key=Secret(secret))


def delete_key(api_key_id: str) -> None:
    """DELETE /v1/manage/apikey/{id}. Raises NotFound if it is already gone."""
    _call("DELETE", f"/v1/manage/apikey/{_path_id(api_key_id)}")


def get_key(api_key_id: str) -> KeyInfo:
    status, content = _call("GET", f"/v1/manage/apikey/{_path_id(api_key_id)}")
    return _key_info(_json(content, status), status)


def list_keys() -> list[KeyInfo]:
    """Every key of the organization (the API documents no pagination)."""
    status, content = _call("GET", "/v1/manage/apikey")
    data = _json(content, status)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise MalformedResponse("Requesty's key list was not a list.", status)
    return [_key_info(item, status) for item in data["keys"]]


def _key_info(item: Any, status: int) -> KeyInfo:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise MalformedResponse("Requesty's key entry had no id.", status)
    perms = item.get("permissions") if isinstance(item.get("permissions"), dict) else {}
    return KeyInfo(
        id=_as_uuid(item["id"]) or item["id"],
        name=str(item.get("name", "")),
        monthly_limit=parse_money(item.get("monthly_limit")),
        monthly_spend=parse_money(item.get("monthly_spend", item.get("spend"))),
        permissions={k: str(perms.get(k, "")) for k in ("manage", "completions")},
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels := item.get("labels"), dict) else {},
    )


def _as_uuid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _path_id(api_key_id: str) -> str:
    """Key ids go into URL paths: accept only UUIDs (or `self`), so no id can rewrite the path."""
    if api_key_id == "self":
        return api_key_id
    valid = _as_uuid(api_key_id)
    if valid is None:
        raise ValueError("not a Requesty key id")
    return valid


def update_limit(api_key_id: str, monthly_limit: Decimal) -> None:
    """POST /v1/manage/apikey/{id}/limit (204)."""
    _call("POST", f"/v1/manage/apikey/{_path_id(api_key_id)}/limit", {"monthly_limit": _json_number(monthly_limit)})


def set_expiry(api_key_id: str, expires_at: datetime | None) -> None:
    """POST /v1/manage/apikey/{id}/expiry (204): `expires_at` as RFC3339 in UTC, None for never.
    Setting the same moment twice is harmless, so unlike a create this call may be retried."""
    value = None if expires_at is None else expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _call("POST", f"/v1/manage/apikey/{_path_id(api_key_id)}/expiry", {"expires_at": value})


@dataclass(frozen=True)
class UsagePoint:
    period: str  # YYYY-MM-DD
    spend: Decimal
    requests: int


def get_usage(api_key_id: str, start, end, resolution: str = "day") -> list[UsagePoint]:
    """GET /v1/manage/apikey/{id}/usage; period keys may be RFC3339 timestamps or dates."""
    params = {"start": start.isoformat(), "end": end.isoformat(), "resolution": resolution}
    status, content = _call("GET", f"/v1/manage/apikey/{_path_id(api_key_id)}/usage", params=params)
    data = _json(content, status)
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        raise MalformedResponse("Requesty's usage answer had no usage.", status)
    points = []
    for period, values in usage.items():
        if not isinstance(values, dict):
            continue
        points.append(
            UsagePoint(
                period=str(period)[:10], spend=parse_money(values.get("spend")) or Decimal(0), requests=_count(values)
            )
        )
    return sorted(points, key=lambda p: p.period)


def set_labels(api_key_id: str, labels: dict[str, str]) -> None:
    """POST /v1/manage/apikey/{id}/label (204): replaces the key's whole set of labels."""
    _call("POST", f"/v1/manage/apikey/{_path_id(api_key_id)}/label", {"labels": dict(labels)})


@dataclass(frozen=True)
class KeyDay:
    api_key_id: str
    day: str  # YYYY-MM-DD
    spend: Decimal
    requests: int


# The organization's usage per key and day can be large (keys x days); a bigger bound than one key's answers.
_MAX_ORG_BODY = 64_000_000


def org_usage_by_key(start, end) -> list[KeyDay]:
    """GET /v1/manage/org/usage?group_by=api_key_id&resolution=day: every key's spend and requests
    per day in one call (what the spend figures, alerts and "last used" are made of)."""
    params = {"start": start.isoformat(), "end": end.isoformat(), "resolution": "day", "group_by": "api_key_id"}
    status, content = _call("GET", "/v1/manage/org/usage", params=params, max_body=_MAX_ORG_BODY)
    data = _json(content, status)
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        raise MalformedResponse("Requesty's usage answer had no usage.", status)
    days = []
    for period, values in usage.items():
        groups = values.get("grouped_data") if isinstance(values, dict) else None
        for group in groups if isinstance(groups, list) else []:
            key_id = group.get("group_by_values", {}).get("api_key_id") if isinstance(group, dict) else None
            if not isinstance(key_id, str):
                continue
            days.append(KeyDay(key_id, str(period)[:10], parse_money(group.get("spend")) or Decimal(0), _count(group)))
    return days


def _count(values: dict) -> int:
    requests_ = values.get("total_requests", values.get("requests", 0))
    return requests_ if isinstance(requests_, int) and not isinstance(requests_, bool) else 0
