"""Key expiry (issue 14): the "Expires" choice and the policy's maximum, the expiry set in Requesty
after the create (and retried when that fails), enforcement at the due time, and expired keys.
Time moves with time-machine, never by sleeping."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from keys import labels, minting
from keys.models import IssuedKey, OnboardingTemplate
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, alert_text, creates, form_data, frozen_clock, mint
from tests.keys.test_policy import group_policy

NOW = datetime(2030, 6, 1, 9, 30, tzinfo=UTC)


clock = frozen_clock(NOW, autouse=True)  # before the signed-in clients: their sessions live in 2030 too


def events(key, prefix="key.expir") -> list[tuple[str, str]]:
    rows = AuditEvent.objects.filter(api_key_id=key.api_key_id, action__startswith=prefix).order_by("seq")
    return list(rows.values_list("action", "outcome"))


def housekeeping() -> str:
    out = StringIO()
    call_command("housekeeping", "--only", "expiry", stdout=out, stderr=out)
    return out.getvalue()


def options(html: str) -> list[str]:
    select = re.search(r'<select id="id_expires" name="expires".*?</select>', html, re.S).group(0)
    return re.findall(r'<option value="([^"]+)"', select)


# --- The form and the policy's maximum ------------------------------------------------------------
def test_the_form_offers_presets_a_date_and_never_only_where_the_policy_allows(rclient, aclient, requester, settings):
    html = rclient.get("/keys/new/").content.decode()
    assert '<label for="id_expires">Expires</label>' in html and '<label for="id_expires_on">' in html
    assert options(html) == ["30", "90", "date"]  # PORTAL_MAX_KEY_DAYS 90: no 180, 365 or never
    assert '<option value="90" selected>' in html and "at most 90 days" in html
    assert options(aclient.get("/keys/new/").content.decode()) == ["30", "90", "180", "365", "date", "never"]
    requester.groups.add(group_policy("long", max_key_days=None), group_policy("short", max_key_days=30))
    assert options(rclient.get("/keys/new/").content.decode())[-1] == "never"  # the most generous group wins
    settings.PORTAL_MAX_KEY_DAYS = 0  # no maximum for people without a group policy either
    requester.groups.clear()
    assert "never" in options(rclient.get("/keys/new/").content.decode())


def test_a_preset_or_a_date_becomes_the_keys_expiry_set_in_requesty(rclient, requester, standin, clock):
    key = mint(rclient, requester, name="thirty", expires="30")
    assert key.expires_at == NOW + timedelta(days=30) and key.expiry_retry_at is None
    assert standin.keys[key.api_key_id]["expires_at"] == "2030-07-01T09:30:00Z"
    assert events(key) == [("key.expiry_set", "success")]
    dated = mint(rclient, requester, name="dated", expires="date", expires_on="2030-06-20")
    assert dated.expires_at == datetime(2030, 6, 20, tzinfo=UTC)
    assert standin.keys[dated.api_key_id]["expires_at"] == "2030-06-20T00:00:00Z"
    undated = mint(rclient, requester, name="old-form")  # a form without the field: the default, 90 days
    assert undated.expires_at == NOW + timedelta(days=90)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"expires": "date", "expires_on": "2030-06-01"}, "after today"),
        ({"expires": "date", "expires_on": "1 July"}, "YYYY-MM-DD"),
        ({"expires": "45"}, "Choose when the key expires"),
    ],
)
def test_unusable_choices_are_field_errors_and_create_nothing(rclient, requester, standin, clock, fields, message):
    response = rclient.post("/keys/new/", form_data(requester, **fields), **HTMX)
    assert response.status_code == 200 and message in alert_text(response)
    assert creates(standin) == [] and not IssuedKey.objects.exists()


@pytest.mark.parametrize(
    "fields", [{"expires": "180"}, {"expires": "never"}, {"expires": "date", "expires_on": "2030-12-31"}]
)
def test_beyond_the_policys_maximum_is_refused_audited_and_creates_nothing(rclient, requester, standin, clock, fields):
    response = rclient.post("/keys/new/", form_data(requester, **fields), **HTMX)
    assert response.status_code == 403
    assert re.search("at most 90 days|never expire", alert_text(response))
    assert creates(standin) == []
    denied = AuditEvent.objects.get(action="mint.denied")
    assert denied.outcome == "denied" and "expires:" in denied.detail
    assert "Request approval" not in response.content.decode()  # lifetimes are not approvable at creation


def test_the_lock_checks_the_lifetime_again_and_admins_may_choose_never(requester, admin_user, aclient, standin, clock):
    requester.groups.add(group_policy("short", max_key_days=30))
    cleaned = {"name": "k", "monthly_limit": Decimal(5), "manage": "none", "completions": "write"}
    with pytest.raises(minting.MintError, match="at most 30 days") as info:
        minting.mint_key(
            actor=requester, cleaned={**cleaned, "expires_at": NOW + timedelta(days=31)}, nonce="n1", source_ip=None
        )
    assert info.value.kind == "beyond_policy" and creates(standin) == []
    # Without a stated expiry the policy's longest applies.
    minted = minting.mint_key(actor=requester, cleaned=cleaned, nonce=uuid.uuid4().hex, source_ip=None)
    assert minted.key.expires_at == NOW + timedelta(days=30)
    never = mint(aclient, admin_user, name="forever", expires="never")
    assert never.expires_at is None and standin.calls_to("POST", f"/v1/manage/apikey/{never.api_key_id}/expiry") == []


def test_links_and_templates_preset_the_expiry_clamped_to_the_policy(rclient, requester, clock):
    html = rclient.get("/keys/new/?name=ci&expires=30").content.decode()
    assert '<option value="30" selected>' in html
    html = rclient.get("/keys/new/?name=ci&expires=never").content.decode()
    assert '<option value="90" selected>' in html and "allows at most 90 days" in html
    OnboardingTemplate.objects.create(slug="t", name_pattern="{username}-t", monthly_limit=5, expiry_days=45)
    html = rclient.get("/keys/new/?template=t").content.decode()
    assert '<option value="date" selected>' in html and 'value="2030-07-16"' in html  # 45 days: a date
    html = rclient.get("/keys/new/?expires=soon").content.decode()
    assert "expiry in the link was not usable" in html and '<option value="90" selected>' in html


# --- Requesty's expiry call fails: the key is still shown, retried, enforced ---------------------
def test_a_failed_expiry_call_still_shows_the_key_and_housekeeping_retries_it(
    rclient, requester, standin, clock, canary, monkeypatch
):
    monkeypatch.setattr(labels, "for_new_key", lambda key, team: None)  # no label call: only expiry calls fail
    standin.inject(Fault.status(503), method="POST", path="/v1/manage/apikey/", times=2)
    response = rclient.post("/keys/new/", form_data(requester, expires="30"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and canary in html and "expiry not yet set in Requesty" in html
    key = IssuedKey.objects.get()
    assert key.expiry_retry_at == NOW + timedelta(minutes=1) and standin.keys[key.api_key_id]["expires_at"] is None
    assert events(key) == [("key.expiry_failed", "unknown")]
    assert "expiry not yet set in Requesty" in rclient.get(f"/keys/{key.pk}/").content.decode()

    assert "expiry: done — 0 key(s) expired, 0 of 0" in housekeeping()  # not yet due: no call
    clock.shift(timedelta(minutes=1))
    assert "0 of 1 expiry retries confirmed" in housekeeping()  # fails again: waits 2 minutes now
    key.refresh_from_db()
    assert key.expiry_failures == 2 and key.expiry_retry_at == NOW + timedelta(minutes=3)
    clock.shift(timedelta(minutes=2))
    assert "1 of 1 expiry retries confirmed" in housekeeping()
    key.refresh_from_db()
    assert key.expiry_retry_at is None and standin.keys[key.api_key_id]["expires_at"] == "2030-07-01T09:30:00Z"
    assert events(key)[-1] == ("key.expiry_set", "success")


def test_the_portal_deletes_a_key_at_its_due_time_even_if_requesty_never_took_the_expiry(
    rclient, requester, standin, clock
):
    standin.inject(Fault.status(500), method="POST", path="/v1/manage/apikey/", times=50)
    key = mint(rclient, requester, expires="30")
    clock.shift(timedelta(days=30) - timedelta(minutes=1))
    housekeeping()
    assert key.api_key_id in standin.keys and IssuedKey.objects.get().status == "active"
    clock.shift(timedelta(minutes=1))
    assert "1 key(s) expired" in housekeeping()
    key.refresh_from_db()
    assert key.api_key_id not in standin.keys and key.status == "expired" and key.ended_at == NOW + timedelta(days=30)
    assert events(key)[-1] == ("key.expired", "success")
    assert AuditEvent.objects.get(action="key.expired").upstream_status == 204
    clock.shift(timedelta(minutes=1))
    assert "0 key(s) expired" in housekeeping()  # done once
    assert len(standin.calls_to("DELETE", "/v1/manage/apikey/")) == 1


def test_a_key_already_gone_upstream_counts_as_expired_and_a_failed_delete_is_retried(
    rclient, requester, standin, clock
):
    gone = mint(rclient, requester, name="gone", expires="30")
    stuck = mint(rclient, requester, name="stuck", expires="30")
    standin.reset()  # both vanish upstream...
    standin.add_key("other")
    clock.shift(timedelta(days=30))
    standin.inject(Fault.status(502), method="DELETE", path=f"/v1/manage/apikey/{stuck.api_key_id}")
    out = StringIO()
    with pytest.raises(Exception, match="1 job"):
        call_command("housekeeping", "--only", "expiry", stdout=out, stderr=out)
    assert "1 due key(s) could not be deleted" in out.getvalue()
    assert IssuedKey.objects.get(pk=gone.pk).status == "expired"
    assert AuditEvent.objects.get(action="key.expired", api_key_id=gone.api_key_id).upstream_status == 404
    assert IssuedKey.objects.get(pk=stuck.pk).status == "active"
    assert events(stuck)[-1] == ("key.expiry_failed", "unknown")
    assert "1 key(s) expired" in housekeeping()  # retried on the next run
    assert IssuedKey.objects.get(pk=stuck.pk).status == "expired"


# --- Expired keys -------------------------------------------------------------------------------
def test_an_expired_key_offers_a_prefilled_replacement_and_cannot_be_extended(rclient, requester, standin, clock):
    key = mint(rclient, requester, name="ci", limit="12.50", expires="30")
    clock.shift(timedelta(days=31))
    housekeeping()
    rclient.force_login(requester)  # the old session timed out meanwhile
    html = rclient.get(f"/keys/{key.pk}/").content.decode()
    assert "expired" in html and "cannot be revived" in html
    link = re.search(r'<a class="button" href="([^"]+)">Create a replacement</a>', html).group(1)
    assert link.startswith("/keys/new/?") and "expires=30" in link
    form = rclient.get(link.replace("&amp;", "&")).content.decode()
    assert 'id="id_name" name="name" value="ci"' in form and 'value="12.50"' in form
    assert '<option value="30" selected>' in form
    assert f'action="/keys/{key.pk}/extend/"' not in html and "Rotate" not in html
    response = rclient.post(f"/keys/{key.pk}/extend/", {"expires": "30"}, **HTMX)
    assert "cannot be revived" in alert_text(response)
    assert events(key)[-1] == ("key.expiry_failed", "denied")
    assert "expired" in rclient.get("/keys/").content.decode()
