"""Rotation (issue 14): a replacement through the issuance state machine, the secret shown once, the
old key ending after the grace period picked; allowed beyond the person's total; the old key
untouched when the replacement is refused, fails or its outcome is unknown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from keys.forms import new_nonce
from keys.models import Issuance, IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, alert_text, creates, frozen_clock, mint
from tests.keys.test_policy import group_policy

NOW = datetime(2030, 6, 1, 9, 30, tzinfo=UTC)


clock = frozen_clock(NOW, autouse=True)


@pytest.fixture
def old(rclient, requester, standin) -> IssuedKey:
    return mint(rclient, requester, name="ci", limit="40", expires="30")


def rotate(client, user, key, grace):
    return client.post(f"/keys/{key.pk}/rotate/", {"grace": str(grace), "nonce": new_nonce(user)}, **HTMX)


@pytest.mark.parametrize("grace", [0, 1, 24])
def test_rotation_with_each_grace_period(rclient, requester, old, standin, canary, clock, grace):
    response = rotate(rclient, requester, old, grace)
    html = response.content.decode()
    assert (
        response.status_code == 200
        and "<html" not in html
        and canary in html
        and "no-store" in response["Cache-Control"]
    )
    new = IssuedKey.objects.exclude(pk=old.pk).get()
    assert (new.name, new.monthly_limit, new.manage, new.completions) == ("ci", Decimal("40"), "none", "write")
    assert new.expires_at == NOW + timedelta(days=30)  # the old key's lifetime again, from now
    assert new.issuance.rotates == old and f'replaces <a href="/keys/{old.pk}/">' in html
    old.refresh_from_db()
    assert old.expires_at == NOW + timedelta(hours=grace)
    if grace == 0:
        assert old.status == "expired" and old.api_key_id not in standin.keys and "has ended" in html
    else:
        assert old.status == "active" and "keeps working until" in html
        assert standin.keys[old.api_key_id]["expires_at"] == (NOW + timedelta(hours=grace)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    rotated = AuditEvent.objects.filter(action="key.rotated").order_by("seq")
    assert [(e.api_key_id, e.outcome) for e in rotated] == [(old.api_key_id, "success"), (new.api_key_id, "success")]
    assert new.api_key_id in rotated[0].detail and old.api_key_id in rotated[1].detail
    # Linked on both pages.
    assert f'Replaced by</dt><dd><a href="/keys/{new.pk}/">' in rclient.get(f"/keys/{old.pk}/").content.decode()
    assert f'Replaces</dt><dd><a href="/keys/{old.pk}/">' in rclient.get(f"/keys/{new.pk}/").content.decode()
    # The grace period is kept by housekeeping.
    if grace:
        clock.shift(timedelta(hours=grace))
        call_command("housekeeping", "--only", "expiry", stdout=StringIO())
        assert IssuedKey.objects.get(pk=old.pk).status == "expired" and old.api_key_id not in standin.keys
    assert IssuedKey.objects.get(pk=new.pk).status == "active" and new.api_key_id in standin.keys


def test_a_rotation_may_briefly_exceed_the_total_and_happens_once(rclient, requester, old, standin):
    requester.groups.add(group_policy("tight", max_key_limit=50, max_total_limit=40, max_active_keys=1))
    assert rotate(rclient, requester, old, 1).status_code == 200
    assert IssuedKey.objects.filter(status="active").count() == 2  # both, until the grace period ends
    again = rotate(rclient, requester, old, 1)
    assert again.status_code == 409 and "already rotated" in alert_text(again)
    new = IssuedKey.objects.exclude(pk=old.pk).get()
    assert "Rotate" in rclient.get(f"/keys/{new.pk}/").content.decode()
    assert len(creates(standin)) == 2  # the old key and its one replacement


@pytest.mark.parametrize(
    "fault,status,message,outcome",
    [
        (Fault.status(400), 502, "Requesty refused these values", "failure"),
        (Fault.status(429), 429, "Requesty is busy", "failure"),
        (Fault.reset(), 202, "could not confirm whether Requesty created the key", "unknown"),
        (Fault.after_action_status(500), 202, "could not confirm whether Requesty created the key", "unknown"),
    ],
)
def test_the_old_key_is_untouched_when_the_replacement_fails_or_is_unknown(
    rclient, requester, old, standin, canary, fault, status, message, outcome
):
    before = (old.status, old.expires_at, standin.keys[old.api_key_id]["expires_at"])
    standin.inject(fault, method="POST", path="/v1/manage/apikey")
    response = rotate(rclient, requester, old, 0)
    html = response.content.decode()
    assert message in html and "The key below is unchanged" in html and canary not in html
    assert response.status_code == status
    old.refresh_from_db()
    assert (old.status, old.expires_at, standin.keys[old.api_key_id]["expires_at"]) == before
    assert not IssuedKey.objects.exclude(pk=old.pk).exists()
    failed = AuditEvent.objects.get(action="key.rotation_failed")
    assert (failed.api_key_id, failed.outcome) == (old.api_key_id, outcome)
    assert Issuance.objects.filter(rotates=old).count() == 1


def test_the_replacements_lifetime_is_clamped_to_todays_policy(aclient, admin_user, rclient, requester, standin):
    forever = mint(aclient, admin_user, name="svc", expires="365")
    IssuedKey.objects.filter(pk=forever.pk).update(owner=requester)  # handed over to someone with a 90-day cap
    assert rotate(rclient, requester, forever, 1).status_code == 200
    assert IssuedKey.objects.get(name="svc", issuance__rotates=forever).expires_at == NOW + timedelta(days=90)


def test_a_stale_form_or_an_unoffered_grace_changes_nothing(rclient, requester, old, standin, settings):
    response = rclient.post(f"/keys/{old.pk}/rotate/", {"grace": "1", "nonce": "forged"}, **HTMX)
    assert "form has expired" in alert_text(response)
    assert "Choose when the old key ends" in alert_text(rotate(rclient, requester, old, 48))
    settings.PORTAL_ROTATION_GRACE_HOURS = 48
    page = rclient.get(f"/keys/{old.pk}/").content.decode()
    assert re.findall(r'<option value="(\d+)"', page.split('id="id_grace"')[1].split("</select>")[0]) == [
        "0",
        "1",
        "48",
    ]
    assert len(creates(standin)) == 1


def test_a_rotated_key_gets_no_reminder(rclient, requester, old, standin, clock, mailoutbox):
    rotate(rclient, requester, old, 24)
    IssuedKey.objects.filter(pk=old.pk).update(expires_at=NOW + timedelta(days=2))
    call_command("housekeeping", "--only", "reminders", stdout=StringIO())
    assert mailoutbox == []
