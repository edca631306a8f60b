"""A key after minting (issue 4): who may reach it, its live spend and usage, revocation, and
offboarding, over HTTP to the stand-in. Limit changes: test_key_limits.py; the list: test_key_list.py."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.test import Client

from keys.models import IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, alert_text, mint
from tests.keys.spend_helpers import spend


# --- Access matrix --------------------------------------------------------------------------------
def urls(key):
    return {
        "detail": ("get", f"/keys/{key.pk}/"),
        "spend": ("get", f"/keys/{key.pk}/spend/"),
        "usage": ("get", f"/keys/{key.pk}/usage/"),
        "limit": ("post", f"/keys/{key.pk}/limit/"),
        "revoke-confirm": ("get", f"/keys/{key.pk}/revoke/"),
    }


def test_owner_other_user_admin_anonymous(rkey, rclient, r2client, aclient, client, standin):
    for name, (method, url) in urls(rkey).items():
        data = {"monthly_limit": "20"} if method == "post" else None
        assert getattr(rclient, method)(url, data).status_code == 200, name
        assert getattr(r2client, method)(url, data).status_code == 404, name  # 404, so ids don't leak
        assert getattr(aclient, method)(url, data).status_code == 200, name
        assert getattr(client, method)(url, data).status_code == 302, name
    assert r2client.post(f"/keys/{rkey.pk}/revoke/").status_code == 404
    assert IssuedKey.objects.get().status == "active"


def test_wrong_methods(rkey, rclient):
    assert rclient.post("/keys/").status_code == 405
    assert rclient.get(f"/keys/{rkey.pk}/limit/").status_code == 405
    assert rclient.post(f"/keys/{rkey.pk}/spend/").status_code == 405
    assert rclient.delete(f"/keys/{rkey.pk}/revoke/").status_code == 405


def test_csrf_is_enforced_on_limit_and_revoke(rkey, requester, standin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(requester)
    assert client.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "5"}, **HTMX).status_code == 403
    assert client.post(f"/keys/{rkey.pk}/revoke/", **HTMX).status_code == 403
    assert standin.calls_to("POST", f"/v1/manage/apikey/{rkey.api_key_id}/limit") == []
    assert standin.calls_to("DELETE", "/v1/manage/apikey/") == []


# --- Spend ----------------------------------------------------------------------------------------
ORG_USAGE = "/v1/manage/org/usage"


def test_without_org_usage_the_spend_bar_comes_from_the_key_and_is_cached(rkey, rclient, standin):
    """The fallback (keys/usage.py): only when the organization call failed, one call per key."""
    standin.inject(Fault.status(500), method="GET", path=ORG_USAGE)
    standin.keys[rkey.api_key_id]["monthly_spend"] = Decimal("5")
    html = rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX).content.decode()
    assert '<progress max="100" value="20"' in html and "$5" in html and "of $25" in html
    rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX)
    assert len(standin.calls_to("GET", f"/v1/manage/apikey/{rkey.api_key_id}")) == 1  # second load was cached
    assert len(standin.calls_to("GET", ORG_USAGE)) == 1  # the failed call is not retried within the period


def test_without_org_usage_the_list_loads_spend_per_row_lazily_and_says_so(rkey, rclient, standin):
    standin.inject(Fault.status(503), method="GET", path=ORG_USAGE)
    html = rclient.get("/keys/").content.decode()
    assert f'hx-get="/keys/{rkey.pk}/spend/" hx-trigger="load"' in html
    assert "organization usage could not be loaded" in html and "key by key" in html
    assert standin.calls_to("GET", "/v1/manage/apikey/") == []  # the page itself never waits on a key's call


@pytest.mark.parametrize(
    "fault", [Fault.status(500), Fault.status(401), Fault.delay(4), Fault.status(200, body="nope")]
)
def test_spend_failure_offers_a_retry(rkey, rclient, standin, settings, fault):
    settings.REQUESTY_READ_TIMEOUT = 0.5  # the slow answer is given up on in 0.5 s, not 3
    standin.inject(fault, method="GET", times=2)  # the organization's usage, then the key's spend
    html = rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX).content.decode()
    assert 'role="alert"' in html and "Retry" in html
    assert IssuedKey.objects.get().status == "active"


def test_spend_of_a_key_requesty_does_not_know(rkey, rclient, standin):
    standin.inject(Fault.status(500), method="GET", path=ORG_USAGE)
    standin.inject(Fault.status(404), method="GET")
    html = rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX).content.decode()
    assert "does not know this key" in html
    assert IssuedKey.objects.get().status == "active"  # a read changes nothing; reconciliation decides


# --- Usage ----------------------------------------------------------------------------------------
def test_usage_chart_and_table(rkey, rclient, standin):
    response = rclient.get(f"/keys/{rkey.pk}/usage/", **HTMX)
    html = response.content.decode()
    assert '<svg class="chart"' in html and 'role="img"' in html and html.count('class="bar"') == 30
    assert html.count("<tr><td>") == 30  # the same numbers as a table
    (call,) = standin.calls_to("GET", f"/v1/manage/apikey/{rkey.api_key_id}/usage")
    assert "<html" not in html
    # Readable without the table (issue 13): a dollar axis from $0.00 to the peak, dates below, 2 decimals.
    ticks = re.findall(r'class="tick y-tick">([^<]*)<', html)
    assert ticks[0] == "$0.00" and all(re.fullmatch(r"\$[\d,]+\.\d{2}", t) for t in ticks) and len(ticks) == 3
    assert len(re.findall(r'class="tick x-tick x-\w+">\d{1,2} [A-Z][a-z]{2}<', html)) == 3
    # more than 2 decimals only where 2 would show $0.00
    assert all(Decimal(v) < Decimal("0.005") for v in re.findall(r"\$(\d+\.\d{3,})", html))


@pytest.mark.parametrize(
    "fault", [Fault.status(500), Fault.status(403), Fault.status(404), Fault.status(200, body="{}")]
)
def test_usage_failures_are_alerts(rkey, rclient, standin, fault):
    standin.inject(fault, method="GET")
    html = rclient.get(f"/keys/{rkey.pk}/usage/", **HTMX).content.decode()
    assert 'role="alert"' in html and f'hx-get="/keys/{rkey.pk}/usage/"' in html  # with a retry


def test_the_key_page_shows_this_months_spend_of_its_limit(rkey, rclient, standin):
    standin.fake_usage = False  # only the spend recorded here
    spend(standin, rkey, "5.269057")  # this month's, in the organization usage (keys/usage.py)
    usage = rclient.get(f"/keys/{rkey.pk}/usage/", **HTMX).content.decode()
    assert "<h3>This month</h3>" in usage and f'hx-get="/keys/{rkey.pk}/spend/"' in usage
    assert "$5.27 of $25.00 (21%)" in rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX).content.decode()


# --- Revoke ---------------------------------------------------------------------------------------
def test_revoke_asks_for_confirmation_naming_the_key(rkey, rclient, standin):
    html = rclient.get(f"/keys/{rkey.pk}/revoke/", **HTMX).content.decode()
    assert "Revoke “laptop”?" in html and "Yes, revoke “laptop”" in html and "<html" not in html
    assert rkey.api_key_id in standin.keys  # asking is not revoking


def test_revoke_page_posts_a_plain_form_and_the_row_question_targets_its_row(rkey, rclient, standin):
    """The key's own page has no row to swap: its form must not aim htmx at one (htmx:targetError)."""
    page = rclient.get(f"/keys/{rkey.pk}/revoke/").content.decode()
    assert "<html" in page and "hx-target" not in page and f'action="/keys/{rkey.pk}/revoke/"' in page
    row_question = rclient.get(f"/keys/{rkey.pk}/revoke/", **HTMX).content.decode()
    assert f'hx-target="#key-{rkey.pk}"' in row_question


def test_revoke_through_htmx_flips_the_row(rkey, rclient, standin):
    response = rclient.post(f"/keys/{rkey.pk}/revoke/", **HTMX)
    html = response.content.decode()
    assert html.strip().startswith(f'<tr id="key-{rkey.pk}"') and "revoked" in html
    assert rkey.api_key_id not in standin.keys
    key = IssuedKey.objects.get()
    assert key.status == "revoked" and key.ended_at
    assert AuditEvent.objects.get(action="key.revoked").actor_username == "rita"


def test_revoke_without_js_redirects_with_a_message(rkey, rclient, standin):
    response = rclient.post(f"/keys/{rkey.pk}/revoke/", follow=True)
    assert response.redirect_chain[-1][0] == "/keys/"
    assert "The key “laptop” is revoked." in response.content.decode()


def test_revoking_an_already_deleted_key(rkey, rclient, standin):
    standin.inject(Fault.status(404), method="DELETE")
    response = rclient.post(f"/keys/{rkey.pk}/revoke/", follow=True)
    assert "already deleted in Requesty" in response.content.decode()
    assert IssuedKey.objects.get().status == "deleted"
    assert AuditEvent.objects.filter(action="key.deleted_upstream").count() == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(500),
        Fault.reset(),
        Fault.status(403),
        Fault.status(502, body="<h1>Bad</h1>", content_type="text/html"),
    ],
)
def test_revoke_failures_leave_the_key_active(rkey, rclient, standin, fault):
    standin.inject(fault, method="DELETE")
    response = rclient.post(f"/keys/{rkey.pk}/revoke/", **HTMX)
    assert alert_text(response)
    assert IssuedKey.objects.get().status == "active"
    assert AuditEvent.objects.filter(action="key.revoke_failed").count() == 1


def test_admin_revokes_anyones_key(rkey, aclient, standin):
    aclient.post(f"/keys/{rkey.pk}/revoke/", **HTMX)
    assert IssuedKey.objects.get().status == "revoked"
    assert AuditEvent.objects.get(action="key.revoked").actor_username == "ada"


# --- Offboarding ----------------------------------------------------------------------------------
def test_deactivating_a_user_revokes_their_keys(rclient, requester, standin, django_capture_on_commit_callbacks):
    first, second = mint(rclient, requester, "one"), mint(rclient, requester, "two")
    with django_capture_on_commit_callbacks(execute=True):
        requester.is_active = False
        requester.save()
    assert first.api_key_id not in standin.keys and second.api_key_id not in standin.keys
    assert set(IssuedKey.objects.values_list("status", flat=True)) == {"revoked"}
    assert all("offboarding of rita" in e.detail for e in AuditEvent.objects.filter(action="key.revoked"))


def test_failed_offboarding_is_listed_for_admins(
    rclient, aclient, requester, standin, django_capture_on_commit_callbacks
):
    key = mint(rclient, requester, "stuck")
    standin.inject(Fault.status(503), method="DELETE")
    with django_capture_on_commit_callbacks(execute=True):
        requester.is_active = False
        requester.save()
    key.refresh_from_db()
    assert key.status == "active" and key.revocation_failed_at
    assert "could not be revoked" in aclient.get("/keys/").content.decode()


def test_offboard_user_command(rclient, requester, standin):
    from io import StringIO

    from django.core.management import call_command

    key = mint(rclient, requester)
    out = StringIO()
    call_command("offboard_user", "rita", stdout=out)
    assert "1 key(s) revoked" in out.getvalue()
    requester.refresh_from_db()
    assert not requester.is_active and key.api_key_id not in standin.keys
