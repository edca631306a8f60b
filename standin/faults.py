"""Fault injection: the misbehaviours a test (or the control API) can queue for the next matching
requests. The HTTP handler (server.py) applies them on the wire: before the action, instead of it,
or after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .protocol import JSON_CT


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


FAULT_KINDS = frozenset(name for name, attr in vars(Fault).items() if isinstance(attr, classmethod))


@dataclass
class Pending:
    """A fault waiting for `times` more requests matching the method and path prefix (None: any)."""

    fault: Fault
    method: str | None
    path: str | None
    times: int

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or path.startswith(self.path)
        )
