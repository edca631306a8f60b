"""What the spend tests share: keys made directly in the portal and the stand-in (no mint form),
and spend recorded in the stand-in."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.utils import timezone

from keys.models import IssuedKey
from tests.keys.helpers import attempt, key_of

ORG_USAGE = "/v1/manage/org/usage"


def issued(standin, owner, name: str, limit: str = "10", **fields) -> IssuedKey:
    """A key that exists in the stand-in and in the portal, as if minted."""
    upstream = standin.add_key(name, Decimal(limit))
    return key_of(attempt(owner, name, limit, api_key_id=upstream["id"]), upstream["id"], **fields)


def spend(standin, key: IssuedKey, amount: str, day: date | None = None, requests: int = 1) -> None:
    day = day or timezone.now().date()
    standin.record_usage(key.api_key_id, day.isoformat(), Decimal(amount), requests)


def org_calls(standin) -> int:
    return len(standin.calls_to("GET", ORG_USAGE))
