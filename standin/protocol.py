"""What the stand-in's requests and answers are made of: the recorded `Call`, the `Reply` a handler
sends, `ApiError` (an answer in Requesty's error shape), and the JSON reading and writing the API
and the control endpoints share.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

MAX_BODY = 1 << 20
JSON_CT = "application/json"


class Call(NamedTuple):
    """One request the stand-in received. Headers are deliberately not kept: the Authorization
    value must never end up anywhere a test might print."""

    method: str
    path: str
    body: dict[str, Any] | None


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


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"origin": "router", "message": message}}


def _json_default(value: object) -> object:
    """Money is Decimal inside; JSON has no decimal type. Integral amounts become ints; others a
    float, whose shortest repr reproduces any amount of up to 15 significant digits exactly."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode(payload: Any) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, default=_json_default).encode()


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw, parse_float=Decimal)
    except ValueError:
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be an RFC3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an RFC3339 timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
