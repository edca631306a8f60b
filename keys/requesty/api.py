"""The Requesty API calls: create, list, get, limit, expiry, labels, delete, usage (one key's and the
organization's), each a function returning a small typed result (see docs/requesty-api.md).

Strict in what it sends, tolerant in what it reads: money as `Decimal`, numbers or numeric strings
accepted. The transport (keys/requesty/transport.py) turns every failure into a typed error.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.views.decorators.debug import sensitive_variables

from .errors import MalformedResponse
from .transport import call

_LEVELS = ("none", "read", "write")


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
    status, content = call("POST", "/v1/manage/apikey", body)
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
    call("DELETE", f"/v1/manage/apikey/{_path_id(api_key_id)}")


def get_key(api_key_id: str) -> KeyInfo:
    status, content = call("GET", f"/v1/manage/apikey/{_path_id(api_key_id)}")
    return _key_info(_json(content, status), status)


def list_keys() -> list[KeyInfo]:
    """Every key of the organization (the API documents no pagination)."""
    status, content = call("GET", "/v1/manage/apikey")
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
    call("POST", f"/v1/manage/apikey/{_path_id(api_key_id)}/limit", {"monthly_limit": _json_number(monthly_limit)})


def set_expiry(api_key_id: str, expires_at: datetime | None) -> None:
    """POST /v1/manage/apikey/{id}/expiry (204): `expires_at` as RFC3339 in UTC, None for never.
    Setting the same moment twice is harmless, so unlike a create this call may be retried."""
    value = None if expires_at is None else expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    call("POST", f"/v1/manage/apikey/{_path_id(api_key_id)}/expiry", {"expires_at": value})


@dataclass(frozen=True)
class UsagePoint:
    period: str  # YYYY-MM-DD
    spend: Decimal
    requests: int


def get_usage(api_key_id: str, start, end, resolution: str = "day") -> list[UsagePoint]:
    """GET /v1/manage/apikey/{id}/usage; period keys may be RFC3339 timestamps or dates."""
    params = {"start": start.isoformat(), "end": end.isoformat(), "resolution": resolution}
    status, content = call("GET", f"/v1/manage/apikey/{_path_id(api_key_id)}/usage", params=params)
    points = []
    for period, values in _usage(content, status).items():
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
    call("POST", f"/v1/manage/apikey/{_path_id(api_key_id)}/label", {"labels": dict(labels)})


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
    status, content = call("GET", "/v1/manage/org/usage", params=params, max_body=_MAX_ORG_BODY)
    days = []
    for period, values in _usage(content, status).items():
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


def _usage(content: bytes, status: int) -> dict:
    """The `usage` object of a usage answer (one key's or the organization's), by period."""
    data = _json(content, status)
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        raise MalformedResponse("Requesty's usage answer had no usage.", status)
    return usage
