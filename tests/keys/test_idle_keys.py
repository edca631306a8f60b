"""Idle keys (keys/idle.py): one "still needed?" e-mail, Keep (audited, resets the clock) and Revoke,
and the optional revocation PORTAL_IDLE_REVOKE_DAYS after the e-mail. Usage comes from the
stand-in over HTTP; time is moved with time-machine."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.core import mail
from django.test import Client

from keys import idle
from keys.models import IssuedKey
from portal.audit.models import AuditEvent
from tests.keys.helpers import frozen_clock
from tests.keys.spend_helpers import issued, spend

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


clock = frozen_clock(START, recorded_usage=True)


def days(clock, n: int) -> None:
    clock.shift(timedelta(days=n))


def test_an_unused_key_gets_one_email_with_keep_and_revoke(standin, requester, clock, settings):
    settings.PORTAL_BASE_URL = "https://keys.example.com"
    key = issued(standin, requester, "forgotten")
    days(clock, 59)
    assert idle.check().startswith("0 idle")
    days(clock, 1)
    assert idle.check().startswith("1 idle")
    (message,) = mail.outbox
    assert message.to == ["rita@example.com"] and "still needed" in message.subject
    assert f"https://keys.example.com/keys/{key.pk}/keep/" in message.body
    assert f"https://keys.example.com/keys/{key.pk}/revoke/" in message.body
    assert "Nothing happens to it" in message.body  # PORTAL_IDLE_REVOKE_DAYS is 0
    days(clock, 30)
    assert idle.check().startswith("0 idle") and len(mail.outbox) == 1  # asked once
    assert AuditEvent.objects.filter(action="key.idle_notified", api_key_id=key.api_key_id).count() == 1
    assert IssuedKey.objects.get().status == "active"


def test_a_used_key_is_not_idle_and_use_after_the_question_answers_it(standin, requester, clock):
    key = issued(standin, requester, "busy")
    days(clock, 50)
    spend(standin, key, "0.01")  # used on day 50: idle from the end of that day
    days(clock, 59)
    assert idle.check().startswith("0 idle")
    days(clock, 2)
    assert idle.check().startswith("1 idle")
    spend(standin, key, "0.01")  # used again after the e-mail
    days(clock, 1)
    idle.check()
    assert IssuedKey.objects.get().idle_notified_at is None


def test_keep_is_audited_and_resets_the_clock(standin, requester, rclient, clock):
    key = issued(standin, requester, "keeper")
    days(clock, 60)
    idle.check()
    page = rclient.get(f"/keys/{key.pk}/keep/")
    assert page.status_code == 200 and "<form" in page.content.decode()
    assert IssuedKey.objects.get().kept_at is None  # a GET (a mail scanner following the link) keeps nothing
    assert "looks unused" in rclient.get(f"/keys/{key.pk}/").content.decode()
    response = rclient.post(f"/keys/{key.pk}/keep/")
    assert response.status_code == 302 and response["Location"] == f"/keys/{key.pk}/"
    key.refresh_from_db()
    assert key.kept_at == START + timedelta(days=60) and key.idle_notified_at is None
    event = AuditEvent.objects.get(action="key.kept")
    assert event.actor_username == "rita" and event.api_key_id == key.api_key_id
    days(clock, 59)
    assert idle.check().startswith("0 idle")
    days(clock, 1)
    assert idle.check().startswith("1 idle") and len(mail.outbox) == 2


def test_keep_is_for_the_owner_and_admins_only(standin, requester, r2client, aclient, clock):
    key = issued(standin, requester, "k")
    assert r2client.post(f"/keys/{key.pk}/keep/").status_code == 404
    assert Client().post(f"/keys/{key.pk}/keep/").status_code == 302  # to sign in
    assert aclient.post(f"/keys/{key.pk}/keep/").status_code == 302
    assert AuditEvent.objects.get(action="key.kept").actor_username == "ada"
    assert aclient.delete(f"/keys/{key.pk}/keep/").status_code == 405


def test_a_revoked_key_cannot_be_kept(standin, requester, rclient, clock):
    key = issued(standin, requester, "gone", status="revoked")
    response = rclient.post(f"/keys/{key.pk}/keep/")
    assert response.status_code == 409 and re.search(r'role="alert">[^<]*nothing to keep', response.content.decode())
    assert IssuedKey.objects.get().kept_at is None
    assert AuditEvent.objects.get(action="key.kept").outcome == "denied"  # the refusal is audited


def test_still_idle_after_the_revoke_days_is_revoked_and_the_owner_told(standin, requester, clock, settings):
    settings.PORTAL_IDLE_REVOKE_DAYS = 7
    key = issued(standin, requester, "stale")
    days(clock, 60)
    idle.check()
    assert "revoked 7 days from now" in mail.outbox[0].body
    days(clock, 6)
    assert idle.check().endswith("0 idle key(s) revoked")
    days(clock, 1)
    assert idle.check().endswith("1 idle key(s) revoked")
    key.refresh_from_db()
    assert key.status == "revoked" and key.api_key_id not in standin.keys
    assert "was revoked" in mail.outbox[1].subject and "idle" in mail.outbox[1].body
    event = AuditEvent.objects.get(action="key.revoked")
    assert event.actor_username == "system" and "idle" in event.detail


def test_never_revoked_when_revoke_days_is_zero(standin, requester, clock):
    key = issued(standin, requester, "stale")
    days(clock, 60)
    idle.check()
    days(clock, 365)
    idle.check()
    assert IssuedKey.objects.get().status == "active" and key.api_key_id in standin.keys
