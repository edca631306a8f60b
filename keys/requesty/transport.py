"""How every call to Requesty travels: the one session, its timeouts and hard deadline, name
resolution bounded by the connect timeout, TLS to the configured name, and each failure classified
as one of the errors in keys/requesty/errors.py.

The rules every outgoing call of the portal shares (no proxy or credentials from the environment,
a timeout on every call) come from portal/http.py, as for the identity provider's calls.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from portal import http

from .errors import AuthFailed, BadRequest, MalformedResponse, NotFound, NotSent, RateLimited, Rejected, Unavailable

# Never picks up proxies or credentials from the environment/.netrc for the admin token's calls
# (portal/http.py); every call below passes its own (connect, read) timeouts as well.
session = http.session(timeout=lambda: (settings.REQUESTY_CONNECT_TIMEOUT, settings.REQUESTY_READ_TIMEOUT))

_MAX_BODY = 1_000_000


# --- Deadline and name resolution -----------------------------------------------------------------
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
        certificate check); the Host header is set by `call`."""
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
session.mount("http://", _WatchedAdapter(pool_maxsize=64))
session.mount("https://", _WatchedAdapter(pool_maxsize=64))


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


# --- The call -------------------------------------------------------------------------------------
@sensitive_variables()
def call(
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
            response = session.request(
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


# --- Error classification -------------------------------------------------------------------------
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
