"""The stand-in's HTTP side: a threaded server on a real socket and the handler that reads each
request, records it, applies an injected fault (before, instead of or after the action: resets,
delays, trickled headers or bodies, other answers) and writes the reply.

Why a real server rather than mocking ``requests``: the portal's failure handling depends on what
actually happens on the wire (timeouts after the request was sent, connection resets, half-sent
bodies, HTML from a proxy). Only a socket can produce those honestly. The server is stdlib-only so
it starts in milliseconds inside a test and needs nothing extra in the sandbox.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .protocol import MAX_BODY, Call, Reply, encode, error_body

if TYPE_CHECKING:
    from .state import StandIn


def is_loopback(host: str) -> bool:
    """True for names/addresses that cannot be reached from another machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # the default listen backlog (5) reset connections when 20 clients came at once

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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms stalls
    server: Server

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
            self._send(Reply(400, error_body("bad Content-Length")))
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
            body = fault.body if fault.body is not None else error_body(f"stand-in injected {fault.code}")
            self._send(Reply(fault.code, body, fault.content_type, fault.headers))
            return
        if kind == "reset":
            self._abort()
            return
        if kind == "together":
            try:
                fault.gate.wait(fault.seconds)
            except threading.BrokenBarrierError:  # timed out waiting (or a partner did): never together
                self._send(Reply(504, error_body("stand-in: the calls held together were not in flight at once")))
                return
        if kind == "delay":
            standin._sleep(fault.seconds)

        reply = standin._dispatch(self.command, url.path, url.query, self.headers.get("Authorization"), raw)

        if kind == "after_action_status":
            body = fault.body if fault.body is not None else error_body(f"stand-in injected {fault.code}")
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
        data = encode(reply.payload)
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
        data = encode(reply.payload)
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
