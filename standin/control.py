"""The control API a sandbox or benchmark uses to steer a stand-in in another process: its state,
a reset, the latency, and faults to inject (`/_standin/...`, only with `control=True`, which
`StandIn` allows on loopback alone: it has no authentication).

`ControlApi` is one part of `StandIn` (state.py); the HTTP handler (server.py) calls `_control`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .faults import FAULT_KINDS, Fault
from .protocol import ApiError, Reply, error_body, json_object


class ControlApi:
    """`/_standin/state`, `/_standin/reset`, `/_standin/latency`, `/_standin/faults`."""

    _lock: Any
    _keys: dict[str, dict[str, Any]]
    _calls: list
    _faults: list
    latency: float

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
            body = json_object(raw)
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
            return Reply(exc.status, error_body(exc.message))
