"""Expiry reminders and the housekeeping jobs that keep keys' promises (issue 14): reminders on the
right days and only once, none for revoked keys or deactivated people, the My keys banner, and two
housekeeping runs at once on PostgreSQL doing each piece of work once."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from keys import housekeeping, reminders
from keys.models import IssuedKey
from portal.audit.models import AuditEvent
from tests.keys.helpers import frozen_clock, mint
from tests.threads import run_together

NOW = datetime(2030, 6, 1, 9, 30, tzinfo=UTC)


clock = frozen_clock(NOW, autouse=True)


def remind() -> str:
    out = StringIO()
    call_command("housekeeping", "--only", "reminders", stdout=out, stderr=out)
    return out.getvalue()


def test_reminders_come_on_the_right_days_once_each(rclient, requester, standin, clock, settings):
    settings.PORTAL_BASE_URL = "https://keys.example.com"
    key = mint(rclient, requester, name="ci", expires="30")
    clock.shift(timedelta(days=16) - timedelta(minutes=1))  # 14 days and a minute left
    assert "0 reminder(s) sent" in remind() and mail.outbox == []
    clock.shift(timedelta(minutes=1))  # exactly 14 days left
    assert "1 reminder(s) sent" in remind()
    (first,) = mail.outbox
    assert first.to == ["rita@example.com"] and "“ci”" in first.subject and "in 14 days" in first.subject
    assert "2030-07-01 09:30 UTC" in first.body
    assert f"https://keys.example.com/keys/{key.pk}/#expiry" in first.body and "rotate" in first.body.lower()
    for _ in range(3):  # running again (and again) sends nothing twice
        clock.shift(timedelta(minutes=1))
        assert "0 reminder(s) sent" in remind()
    clock.shift(timedelta(days=11) - timedelta(minutes=3))  # 3 days left
    assert "1 reminder(s) sent" in remind()
    assert len(mail.outbox) == 2 and "in 3 days" in mail.outbox[1].subject
    clock.shift(timedelta(days=2))
    assert "0 reminder(s) sent" in remind()
    events = AuditEvent.objects.filter(action="key.expiry_reminded").order_by("seq")
    assert [("14 days" in e.detail, "3 days" in e.detail, e.actor_username) for e in events] == [
        (True, False, "system"),
        (False, True, "system"),
    ]


def test_a_reminder_missed_while_the_portal_was_down_is_sent_once_for_the_nearest_day(
    rclient, requester, standin, clock
):
    mint(rclient, requester, expires="30")
    clock.shift(timedelta(days=28))  # 2 days left: the 14-day reminder was never sent
    remind()
    assert len(mail.outbox) == 1 and "in 2 days" in mail.outbox[0].subject
    assert IssuedKey.objects.get().reminded_days == 3


def test_no_reminders_for_revoked_keys_deactivated_people_or_people_without_e_mail(
    rclient, requester, r2client, requester2, standin, clock
):
    revoked = mint(rclient, requester, name="revoked", expires="30")
    rclient.post(f"/keys/{revoked.pk}/revoke/")
    mint(r2client, requester2, name="robs", expires="30")
    User.objects.filter(pk=requester2.pk).update(is_active=False)  # bypasses the offboarding signal
    nomail = User.objects.create_user("nomail", password="x")
    nomail_client = type(rclient)()
    nomail_client.force_login(nomail)
    mint(nomail_client, nomail, name="quiet", expires="30")
    clock.shift(timedelta(days=20))
    assert "0 reminder(s) sent" in remind() and mail.outbox == []


def test_a_failed_send_is_retried_on_the_next_run(rclient, requester, standin, clock, monkeypatch):
    mint(rclient, requester, expires="30")
    clock.shift(timedelta(days=20))
    monkeypatch.setattr(reminders, "send_mail", lambda *a, **k: (_ for _ in ()).throw(OSError("smtp down")))
    with pytest.raises(CommandError):
        call_command("housekeeping", "--only", "reminders", stdout=StringIO(), stderr=StringIO())
    assert (
        IssuedKey.objects.get().reminded_days is None
        and not AuditEvent.objects.filter(action="key.expiry_reminded").exists()
    )
    monkeypatch.undo()
    assert "1 reminder(s) sent" in remind()
    assert [m.subject for m in mail.outbox if m.to == ["rita@example.com"]] == [
        "Your Requesty key “laptop” expires in 10 days"
    ]


def test_my_keys_shows_a_banner_within_the_first_reminder_window(rclient, requester, standin, clock):
    key = mint(rclient, requester, name="ci", expires="30")
    assert "expire soon" not in rclient.get("/keys/").content.decode()
    clock.shift(timedelta(days=17))
    rclient.force_login(requester)
    html = rclient.get("/keys/").content.decode()
    assert "1 of your keys expires soon" in html and f'href="/keys/{key.pk}/#expiry">“ci”</a>' in html


def test_the_banner_names_the_keys_that_expire_first_and_counts_the_rest(rclient, requester, standin):
    from tests.keys.test_key_list import make_keys

    keys = make_keys(requester, reminders.EXPIRING_LISTED + 2, "batch")
    now = timezone.now()
    for i, key in enumerate(keys):
        IssuedKey.objects.filter(pk=key.pk).update(expires_at=now + timedelta(days=1, hours=i))
    html = rclient.get("/keys/").content.decode()
    assert "12 of your keys expire soon." in html and "(the 10 that expire first are listed;" in html
    listed = re.findall(r'href="/keys/(\d+)/#expiry"', html)
    assert listed == [str(k.pk) for k in keys[: reminders.EXPIRING_LISTED]]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_housekeeping_runs_at_once_do_each_piece_of_work_once(standin, requester, requester2, monkeypatch):
    monkeypatch.setattr(housekeeping, "jobs", lambda: [j for j in _real_jobs() if j.name != "reconcile"])
    from django.test import Client

    keys = []
    for user in (requester, requester2):
        client = Client()
        client.force_login(user)
        keys += [mint(client, user, name=f"due-{user.pk}", expires="30"), mint(client, user, name=f"soon-{user.pk}")]
    due = [k for k in keys if k.name.startswith("due")]
    IssuedKey.objects.filter(pk__in=[k.pk for k in due]).update(expires_at=NOW - timedelta(minutes=1))
    IssuedKey.objects.exclude(pk__in=[k.pk for k in due]).update(expires_at=NOW + timedelta(days=2))
    run_together(housekeeping.run_once, housekeeping.run_once)
    assert len(standin.calls_to("DELETE", "/v1/manage/apikey/")) == 2
    assert sorted(IssuedKey.objects.values_list("status", flat=True)) == ["active", "active", "expired", "expired"]
    assert AuditEvent.objects.filter(action="key.expired").count() == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["rita@example.com", "rob@example.com"]
    assert AuditEvent.objects.filter(action="key.expiry_reminded").count() == 2
    # And once more, later: nothing is done twice.
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        housekeeping.run_once()
    assert len(standin.calls_to("DELETE", "/v1/manage/apikey/")) == 2 and len(mail.outbox) == 2


_real_jobs = housekeeping.jobs
