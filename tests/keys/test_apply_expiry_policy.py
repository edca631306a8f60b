"""`manage.py apply_expiry_policy [--dry-run]` (issue 14): keys minted before expiry existed get the
policy's lifetime, never sooner than 14 days from now, set in Requesty, and their owners are told."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command

from keys import minting
from keys.models import IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.test_policy import group_policy

NOW = datetime(2030, 6, 1, 9, 30, tzinfo=UTC)


def mint(user, name: str) -> IssuedKey:
    cleaned = {"name": name, "monthly_limit": Decimal(5), "manage": "none", "completions": "write"}
    return minting.mint_key(actor=user, cleaned=cleaned, nonce=uuid.uuid4().hex, source_ip=None).key


@pytest.fixture
def keys(requester, admin_user, standin):
    """Keys as an older portal left them: no expiry, here or upstream."""
    with time_machine.travel(NOW - timedelta(days=200), tick=False):
        old = mint(requester, "old")
    with time_machine.travel(NOW - timedelta(days=10), tick=False):
        recent = mint(requester, "recent")
        admins = mint(admin_user, "admins")
    IssuedKey.objects.update(expires_at=None)
    for key in standin.keys.values():
        key["expires_at"] = None
    return old, recent, admins


def apply(*args) -> str:
    out = StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("apply_expiry_policy", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_dry_run_says_what_would_change_and_changes_nothing(keys, standin):
    old, recent, admins = keys
    calls, events = len(standin.calls), AuditEvent.objects.count()
    out = apply("--dry-run")
    assert f"{old.api_key_id} “old”: would expire 2030-06-15 09:30 UTC" in out  # 14 days from now at the earliest
    assert f"{recent.api_key_id} “recent”: would expire 2030-08-20 09:30 UTC" in out  # created + 90 days
    assert "allows no expiry; unchanged" in out and "2 key(s) would get an expiry" in out
    assert not IssuedKey.objects.filter(expires_at__isnull=False).exists()
    assert (len(standin.calls), AuditEvent.objects.count(), mail.outbox) == (calls, events, [])


def test_keys_get_the_policys_lifetime_set_upstream_and_owners_are_told(keys, requester, standin):
    old, recent, admins = keys
    standin.inject(Fault.status(503), method="POST", path=f"/v1/manage/apikey/{recent.api_key_id}/expiry")
    out = apply()
    assert "2 key(s) got an expiry; 1 not yet confirmed by Requesty" in out and "1 owner(s) told" in out
    old.refresh_from_db(), recent.refresh_from_db(), admins.refresh_from_db()
    assert old.expires_at == NOW + timedelta(days=14) and recent.expires_at == NOW + timedelta(days=80)
    assert admins.expires_at is None  # an admin's policy has no maximum
    assert standin.keys[old.api_key_id]["expires_at"] == "2030-06-15T09:30:00Z"
    assert recent.expiry_retry_at is not None  # housekeeping retries it
    applied = AuditEvent.objects.filter(action="key.expiry_set", detail__startswith="expiry policy applied")
    assert sorted(applied.values_list("api_key_id", flat=True)) == sorted([old.api_key_id, recent.api_key_id])
    assert set(applied.values_list("actor_username", flat=True)) == {"system"}
    (message,) = mail.outbox
    assert message.to == ["rita@example.com"] and "“old” expires 2030-06-15 09:30 UTC" in message.body
    assert "“recent” expires 2030-08-20 09:30 UTC" in message.body
    assert "0 key(s) got an expiry" in apply()  # running it again changes nothing


def test_a_groups_lifetime_is_used(keys, requester):
    requester.groups.add(group_policy("year", max_key_days=365))
    apply()
    assert IssuedKey.objects.get(name="recent").expires_at == NOW - timedelta(days=10) + timedelta(days=365)
