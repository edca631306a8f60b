"""The documented Requesty key-management API (docs/requesty-api.md) over the stand-in's state:
the routing table, the bearer-token check and one method per endpoint.

`RequestyApi` is one part of `StandIn` (state.py), which holds the keys (`_keys`, behind `_lock`)
and mints them (`add_key`); the HTTP handler (server.py) calls `_dispatch`.
"""

from __future__ import annotations

import re
import secrets
import traceback
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .protocol import ApiError, Reply, error_body, json_object, timestamp
from .usage import org_period, usage_query

LEVELS = frozenset({"none", "read", "write"})
DEFAULT_PERMISSIONS = {"manage": "none", "completions": "write"}
ADMIN_ID = "00000000-0000-4000-8000-000000000001"
ADMIN_USER = {"id": "00000000-0000-4000-8000-0000000000a1", "email": "admin@standin.invalid"}

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


def _money(value: Any, name: str = "monthly_limit") -> Decimal:
    """Requesty wants a JSON number >= 0; strings and booleans are client bugs we must expose."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ApiError(400, f"{name} must be a number")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ApiError(400, f"{name} must be a non-negative number")
    return amount


class RequestyApi:
    """The endpoints, called with the lock held; see the module docstring for what they rely on."""

    _lock: Any
    _keys: dict[str, dict[str, Any]]
    admin_token: str

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
            return Reply(exc.status, error_body(exc.message), headers=headers)
        except Exception as exc:  # noqa: BLE001 -- a stand-in bug: answer like a broken upstream, keep serving
            traceback.print_exc()  # no locals are printed, so no token or secret can leak here
            return Reply(500, error_body(f"stand-in internal error: {type(exc).__name__}"))

    def _authenticate(self, auth: str | None) -> None:
        scheme, _, token = (auth or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing bearer token")
        if not secrets.compare_digest(token.strip().encode(), self.admin_token.encode()):
            raise ApiError(403, "invalid API key")

    def _key(self, key_id: str) -> dict[str, Any]:
        if key_id not in self._keys:
            raise ApiError(404, "API key not found")
        return self._keys[key_id]

    def _live_key(self, key_id: str) -> dict[str, Any]:
        """A key that may still be changed: Requesty refuses every update of an expired key
        (its limit, labels and expiry alike), so an expired key can never be revived."""
        key = self._key(key_id)
        expires_at = key["expires_at"]
        if expires_at is not None and timestamp(expires_at, "expires_at") <= datetime.now(UTC):
            raise ApiError(400, "API key has expired and cannot be updated")
        return key

    # ---- endpoints (called with the lock held) -----------------------------------------------
    def _api_create(self, raw: bytes, query: str) -> Reply:
        body = json_object(raw)
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
        body = json_object(raw)
        key["monthly_limit"] = _money(body.get("monthly_limit"))
        return Reply(204)

    def _api_label(self, key_id: str, raw: bytes, query: str) -> Reply:
        key = self._live_key(key_id)
        labels = json_object(raw).get("labels")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ApiError(400, "labels must be an object of strings")
        key["labels"] = dict(labels)
        return Reply(204)

    def _api_expiry(self, key_id: str, raw: bytes, query: str) -> Reply:
        key = self._live_key(key_id)
        body = json_object(raw)
        if "expires_at" not in body:
            raise ApiError(400, "expires_at is required")
        value = body["expires_at"]
        if value is not None:
            timestamp(value, "expires_at")
        key["expires_at"] = value
        return Reply(204)

    def _api_usage(self, key_id: str, raw: bytes, query: str) -> Reply:
        if key_id != "self":
            self._key(key_id)
        periods, resolution, _ = usage_query(query)
        return Reply(200, {"usage": {p: self._usage_of(key_id, p, resolution) for p in periods}})

    def _api_org_usage(self, raw: bytes, query: str) -> Reply:
        """The organization's usage per period (usage.org_period: grouped by key on request)."""
        periods, resolution, group_by = usage_query(query)
        usage = {}
        for period in periods:
            rows = [(key_id, self._usage_of(key_id, period, resolution)) for key_id in self._keys]
            usage[period] = org_period(rows, group_by)
        return Reply(200, {"usage": usage})

    def _api_org(self, raw: bytes, query: str) -> Reply:
        return Reply(200, {"name": "Stand-in Org", "balance": 1000})
