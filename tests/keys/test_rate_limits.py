"""How often one person may ask (threat 11): at most PORTAL_MINTS_PER_HOUR mints, counted in the
database and failing closed, and past PORTAL_AUDIT_REFUSALS_PER_HOUR refusals further posts are
refused unexamined. The same limits under parallel requests: test_policy.py (PostgreSQL)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from keys.models import Issuance
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import creates, post_mint


def test_rate_limit(rclient, requester, standin, settings):
    settings.PORTAL_MINTS_PER_HOUR = 3
    for i in range(3):
        assert post_mint(rclient, requester, name=f"k{i}").status_code == 200
    response = post_mint(rclient, requester, name="k4")
    assert response.status_code == 429 and int(response["Retry-After"]) > 3500
    assert "Try again in 60 minutes" in response.content.decode() and 'role="alert"' in response.content.decode()
    assert len(creates(standin)) == 3
    assert AuditEvent.objects.filter(action="mint.rate_limited").count() == 1


@pytest.mark.parametrize("fault", [Fault.status(503), Fault.reset(), Fault.after_action_status(500)])
def test_refused_and_unknown_attempts_do_not_use_up_the_hourly_limit(rclient, requester, standin, settings, fault):
    """A Requesty outage must not lock people out for an hour (issue 13): only keys count."""
    settings.PORTAL_MINTS_PER_HOUR, settings.REQUESTY_READ_TIMEOUT = 2, 0.5
    for i in range(3):
        standin.inject(fault, method="POST", path="/v1/manage/apikey")
        assert post_mint(rclient, requester, name=f"down{i}").status_code in (202, 429, 502, 503)
    assert not AuditEvent.objects.filter(action="mint.rate_limited").exists()
    assert post_mint(rclient, requester, name="up").status_code == 200


def test_rate_limit_counts_per_user(rclient, requester, requester2, standin, settings):
    settings.PORTAL_MINTS_PER_HOUR = 1
    post_mint(rclient, requester)
    other = Client()
    other.force_login(requester2)
    assert post_mint(other, requester2).status_code == 200


def test_rate_limiter_fails_closed(rclient, requester, standin, monkeypatch):
    from django.db import OperationalError

    import keys.minting

    def broken(actor):
        raise OperationalError("cannot count")

    monkeypatch.setattr(keys.minting, "_check_rate_limit", broken)
    response = post_mint(rclient, requester)
    assert response.status_code == 503 and creates(standin) == []


# --- Too many refusals: further mint POSTs are refused unexamined (portal.audit.bounds) -----------
def test_every_refusal_is_audited_until_the_bound_then_posts_are_refused_unexamined(
    rclient, requester, requester2, standin, settings, caplog
):
    """A script posting refused mints must not be able to append refusal after refusal to the
    chain (whose lock every mint waits for); nor may noise hide a forged value afterwards."""
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 3
    for _ in range(3):  # within policy's reach but over the cap: honest-looking refusals
        assert post_mint(rclient, requester, monthly_limit="5000").status_code == 403
    for forged in ("write", "WRITE"):  # then forged values: refused without being examined
        response = post_mint(rclient, requester, manage=forged)
        assert response.status_code == 429 and 3500 < int(response["Retry-After"]) <= 3601
        assert "not taking more from you for now" in response.content.decode()
        assert 'role="alert"' in response.content.decode()
    assert creates(standin) == [] and not Issuance.objects.exists()
    assert AuditEvent.objects.filter(action="mint.denied").count() == 3  # every examined refusal
    (note,) = AuditEvent.objects.filter(action="mint.rate_limited")  # one note, not one per POST
    assert note.detail.startswith("[bound reached]") and note.actor_id == requester.pk
    assert sum("Request refused unexamined" in r.getMessage() for r in caplog.records) == 2

    other = Client()
    other.force_login(requester2)
    assert post_mint(other, requester2, manage="write").status_code == 403  # another user's own count
    assert AuditEvent.objects.filter(action="mint.denied", actor_id=requester2.pk).count() == 1


def test_the_refusal_count_covers_the_last_hour_only_and_not_its_own_note(rclient, requester, standin, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1
    start = timezone.now()
    assert post_mint(rclient, requester, manage="write").status_code == 403
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("portal.audit.bounds.timezone.now", lambda: start + timedelta(minutes=30))
        response = post_mint(rclient, requester, manage="write")  # the note is written now
        assert response.status_code == 429 and 1700 < int(response["Retry-After"]) <= 1801
        assert re.search(r"Try again in 3[01] minutes", response.content.decode())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("portal.audit.bounds.timezone.now", lambda: start + timedelta(hours=1, seconds=1))
        assert post_mint(rclient, requester).status_code == 200  # the note, 31 minutes old, is no refusal
