"""The mint form at /keys/new/: every path through the view, over real HTTP to the stand-in."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.utils.html import escape

from keys.forms import new_nonce
from keys.models import Issuance, IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, URL, alerts, creates, form_data


# --- GET ------------------------------------------------------------------------------------------
def test_form_page_has_labelled_fields_and_no_store(rclient, standin):
    response = rclient.get(URL)
    html = response.content.decode()
    assert response.status_code == 200
    for label in ("Name", "Monthly limit (USD)", "Manage permission", "Completions permission"):
        assert f">{label}</label>" in html
    assert ">Create key</button>" in html
    assert 'hx-post="/keys/new/"' in html and 'action="/keys/new/"' in html
    assert "no-store" in response["Cache-Control"]
    assert "<html" in html
    assert creates(standin) == []


def test_requester_is_offered_only_manage_none(rclient):
    html = rclient.get(URL).content.decode()
    manage = re.search(r'<select id="id_manage".*?</select>', html, re.S).group(0)
    assert re.findall(r'value="(\w+)"', manage) == ["none"]


def test_admin_is_offered_every_manage_level(aclient):
    html = aclient.get(URL).content.decode()
    manage = re.search(r'<select id="id_manage".*?</select>', html, re.S).group(0)
    assert re.findall(r'value="(\w+)"', manage) == ["none", "read", "write"]


def test_anonymous_is_sent_to_sign_in(client, standin):
    for method in (client.get, client.post):
        response = method(URL)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=/keys/new/")
    assert creates(standin) == []


def test_wrong_method_is_405(rclient):
    assert rclient.put(URL).status_code == 405
    assert rclient.delete(URL).status_code == 405


def test_security_headers(rclient):
    response = rclient.get(URL)
    csp = response["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp and "base-uri 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'nonce="{nonce}"' in response.content.decode()


# --- Prefill from onboarding links ----------------------------------------------------------------
def test_prefill_from_query_parameters(rclient, standin):
    response = rclient.get(URL, {"name": "onboarding-dev", "monthly_limit": "15.50", "completions": "read"})
    html = response.content.decode()
    assert 'value="onboarding-dev"' in html and 'value="15.50"' in html
    assert re.search(r'<option value="read" selected>', html)
    assert creates(standin) == []


def test_hostile_link_is_clamped_and_never_submits(rclient, standin):
    response = rclient.get(URL, {"manage": "write", "monthly_limit": "99999", "completions": "all", "name": "x\x07y"})
    html = response.content.decode()
    assert 'value="100"' in html  # clamped to PORTAL_MAX_MONTHLY_LIMIT
    assert "without approval you can have up to $100.00" in html
    assert "cannot set the manage permission" in html
    assert 'name="name" value=""' in html
    manage = re.search(r'<select id="id_manage".*?</select>', html, re.S).group(0)
    assert re.findall(r'value="(\w+)"', manage) == ["none"]
    assert creates(standin) == [] and Issuance.objects.count() == 0


# --- Success --------------------------------------------------------------------------------------
def test_htmx_mint_shows_secret_once(rclient, requester, standin, canary):
    response = rclient.post(URL, form_data(requester, name="  my laptop "), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="mint"' in html and 'hx-history="false"' in html
    assert canary in html
    assert "only time it is shown" in html
    assert "no-store" in response["Cache-Control"]
    assert "HX-Request" in response["Vary"]
    # The secret sits outside any form and in no named field.
    panel = html[html.index("secret-value") - 200 : html.index(canary) + len(canary) + 20]
    assert "<form" not in panel.split("secret-value")[0][-200:]
    assert not re.search(r'name="[^"]*"[^>]*>' + canary, html)

    key = IssuedKey.objects.get()
    assert key.owner == requester and key.name == "my laptop" and key.monthly_limit == Decimal("25")
    assert key.api_key_id in html and key.api_key_id in standin.keys
    (call,) = creates(standin)
    assert call.body == {
        "name": f"my laptop [portal:{key.issuance.reference}]",
        "monthly_limit": 25,
        "permissions": {"manage": "none", "completions": "write"},
    }
    assert key.issuance.state == "issued"
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "outcome", "actor_username", "source_ip"))
    assert actions == [
        ("mint.requested", "pending", "rita", "127.0.0.1"),
        ("mint.issued", "success", "rita", "127.0.0.1"),
        ("key.expiry_set", "success", "rita", "127.0.0.1"),  # the default lifetime, set after the create
        ("key.labelled", "success", "rita", "127.0.0.1"),
    ]


def test_plain_post_without_js_renders_the_whole_page(rclient, requester, standin, canary):
    response = rclient.post(URL, form_data(requester, monthly_limit="12.34"))
    html = response.content.decode()
    assert response.status_code == 200 and "<html" in html and canary in html
    (call,) = creates(standin)
    assert call.body["monthly_limit"] == Decimal("12.34")


def test_secret_is_gone_on_the_next_page(rclient, requester, standin, canary):
    rclient.post(URL, form_data(requester))
    for page in ("/", URL):
        assert canary not in rclient.get(page).content.decode()


def test_admin_may_mint_manage_write_and_unlimited(aclient, admin_user, standin):
    response = aclient.post(URL, form_data(admin_user, manage="write", monthly_limit="0"), **HTMX)
    assert response.status_code == 200
    (call,) = creates(standin)
    assert call.body["permissions"] == {"manage": "write", "completions": "write"}
    assert call.body["monthly_limit"] == 0
    assert "No cap" in response.content.decode()


def test_superuser_counts_as_admin(superuser, standin):
    client = Client()
    client.force_login(superuser)
    response = client.post(URL, form_data(superuser, manage="read", monthly_limit="500"), **HTMX)
    assert response.status_code == 200 and len(creates(standin)) == 1


# --- Validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value,message",
    [
        ("name", "   ", "Give the key a name"),
        ("name", "x" * 65, "64 characters or fewer"),
        ("name", "bad\nname", "control characters"),
        ("name", "evil\u202ename", "control characters"),
        ("name", "x [portal:0123456789ab]", "adds that marker itself"),
        ("monthly_limit", "", "Enter a monthly limit"),
        ("monthly_limit", "NaN", "plain digits"),
        ("monthly_limit", "inf", "plain digits"),
        ("monthly_limit", "Infinity", "plain digits"),
        ("monthly_limit", "1e2", "plain digits"),
        ("monthly_limit", "-5", "cannot be negative"),
        ("monthly_limit", "1,000", "thousands separators"),
        ("monthly_limit", "ten dollars", "plain digits"),
        ("monthly_limit", "12 50", "plain digits"),
        ("monthly_limit", "1.005", "2 decimal places"),
        ("monthly_limit", "0", "more than 0"),
        ("monthly_limit", "0x10", "plain digits"),
    ],
)
def test_bad_input_gets_a_clear_alert_and_changes_nothing(rclient, requester, standin, field, value, message):
    data = form_data(requester, **{field: value})
    response = rclient.post(URL, data, **HTMX)
    assert response.status_code == 200
    assert any(message in text for text in alerts(response)), alerts(response)
    html = response.content.decode()
    assert 'name="monthly_limit"' in html  # the form comes back with the user's input
    if field == "name" and value.strip() and "\n" not in value:
        assert f'name="name" value="{escape(value)}"' in html  # the user's input comes back
    assert creates(standin) == [] and Issuance.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_expired_or_foreign_nonce_is_refused(rclient, requester, requester2, standin):
    for nonce in ("garbage", new_nonce(requester2)):
        response = rclient.post(URL, form_data(requester, nonce=nonce), **HTMX)
        assert any("expired" in text for text in alerts(response))
    assert creates(standin) == []


# --- Policy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("forged", ["write", "read", "WRITE", " write", "none ", ["none", "write"], ""])
def test_forged_manage_from_requester_is_denied_and_audited(rclient, requester, standin, forged):
    response = rclient.post(URL, form_data(requester, manage=forged), **HTMX)
    assert response.status_code in (200, 403)
    assert alerts(response)
    assert creates(standin) == [] and Issuance.objects.count() == 0
    if forged != "":  # an empty value is a plain missing field
        assert response.status_code == 403
        event = AuditEvent.objects.get()
        assert (event.action, event.outcome, event.actor_username) == ("mint.denied", "denied", "rita")


def test_over_limit_is_denied_for_requester(rclient, requester, standin):
    response = rclient.post(URL, form_data(requester, monthly_limit="100.01"), **HTMX)
    assert response.status_code == 403
    assert any("at most $100" in text for text in alerts(response))
    assert creates(standin) == []
    assert AuditEvent.objects.get().action == "mint.denied"


def test_admin_forged_level_is_a_validation_error(aclient, admin_user, standin):
    response = aclient.post(URL, form_data(admin_user, manage="WRITE"), **HTMX)
    assert any("Choose one of" in t for t in alerts(response))
    assert creates(standin) == []


def test_portal_max_monthly_limit_setting(rclient, requester, standin, settings):
    settings.PORTAL_MAX_MONTHLY_LIMIT = Decimal("5")
    assert rclient.post(URL, form_data(requester, monthly_limit="6"), **HTMX).status_code == 403
    assert rclient.post(URL, form_data(requester, monthly_limit="5"), **HTMX).status_code == 200
    assert len(creates(standin)) == 1


# --- Idempotency ----------------------------------------------------------------------------------
def test_second_post_with_same_nonce_mints_nothing(rclient, requester, standin, canary):
    data = form_data(requester)
    first = rclient.post(URL, data, **HTMX)
    second = rclient.post(URL, data, **HTMX)
    assert canary in first.content.decode()
    assert second.status_code == 409 and canary not in second.content.decode()
    assert any("already submitted" in text for text in alerts(second))
    assert len(creates(standin)) == 1 and IssuedKey.objects.count() == 1
    assert AuditEvent.objects.filter(action="mint.duplicate").count() == 1


def test_button_is_disabled_while_in_flight(rclient):
    assert 'hx-disabled-elt="find button[type=submit]"' in rclient.get(URL).content.decode()


# --- CSRF -----------------------------------------------------------------------------------------
def test_csrf_is_enforced(requester, standin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(requester)
    assert client.post(URL, form_data(requester), **HTMX).status_code == 403
    assert client.post(URL, form_data(requester), HTTP_X_CSRFTOKEN="forged", **HTMX).status_code == 403
    # A token from the page in the htmx header works, unless the Origin is foreign.
    page = client.get(URL).content.decode()
    token = re.search(r'"x-csrftoken": "([^"]+)"', page).group(1)
    foreign = client.post(URL, form_data(requester), HTTP_X_CSRFTOKEN=token, HTTP_ORIGIN="https://evil.example", **HTMX)
    assert foreign.status_code == 403
    assert creates(standin) == []
    ok = client.post(URL, form_data(requester), HTTP_X_CSRFTOKEN=token, **HTMX)
    assert ok.status_code == 200 and len(creates(standin)) == 1


# --- Database failures ----------------------------------------------------------------------------
def test_record_failure_after_create_compensates_and_shows_no_secret(
    rclient, requester, standin, canary, monkeypatch, debug_logs
):
    from django.db import DatabaseError

    import keys.minting

    def broken(issuance, api_key_id, template=""):
        raise DatabaseError("audit insert failed")

    monkeypatch.setattr(keys.minting, "_record_issued", broken)
    response = rclient.post(URL, form_data(requester), **HTMX)
    assert response.status_code == 503
    assert canary not in response.content.decode()
    assert any("deleted again for safety" in t for t in alerts(response))
    assert standin.keys == {} and len(standin.calls_to("DELETE", "/v1/manage/apikey/")) == 1
    assert Issuance.objects.get().state == "compensated"


def test_failed_compensation_leaves_an_unknown_record_with_its_id(rclient, requester, standin, monkeypatch):
    from django.db import DatabaseError

    import keys.minting

    monkeypatch.setattr(keys.minting, "_record_issued", lambda *a: (_ for _ in ()).throw(DatabaseError("down")))
    standin.inject(Fault.status(503), method="DELETE")
    response = rclient.post(URL, form_data(requester), **HTMX)
    assert response.status_code == 503 and "being removed again" in response.content.decode()
    issuance = Issuance.objects.get()
    assert issuance.state == "unknown" and issuance.api_key_id in standin.keys
    assert AuditEvent.objects.filter(action="key.compensation_failed").count() == 1


def test_database_down_before_the_record_means_503_and_no_call(rclient, requester, standin):
    from django.db import OperationalError, connection

    def down(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "keys_issuance"'):  # the issuance record's insert
            raise OperationalError("connection refused")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(down):
        response = rclient.post(URL, form_data(requester), **HTMX)
    assert response.status_code == 503
    assert any("cannot reach its database" in t for t in alerts(response))
    assert creates(standin) == []


def test_database_still_down_after_a_failed_mint_is_a_503_not_a_500(rclient, requester, standin, monkeypatch):
    from django.db import DatabaseError

    import keys.minting
    import keys.views

    monkeypatch.setattr(keys.minting, "_record_issued", lambda *a: (_ for _ in ()).throw(DatabaseError("down")))
    monkeypatch.setattr(keys.views, "_form_context", lambda *a, **k: (_ for _ in ()).throw(DatabaseError("down")))
    response = rclient.post(URL, form_data(requester), **HTMX)
    assert response.status_code == 503 and any("deleted again for safety" in t for t in alerts(response))
    assert standin.keys == {}


def test_an_unhandled_database_outage_answers_503(requester, monkeypatch):
    from django.db import OperationalError

    import keys.views

    def down(*args, **kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(keys.views, "_form_context", down)
    client = Client(raise_request_exception=False)
    client.force_login(requester)
    response = client.get(URL)
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert 'role="alert"' in response.content.decode() and "nothing was created" in response.content.decode()


def test_a_mint_stays_within_its_statement_budget(rclient, requester, standin, django_assert_max_num_queries):
    """The session and the user; recent refusals are counted; the user's own and their groups'
    permissions are read (one statement, portal/accounts/backends.py); the form resolves the policy
    and reads the headroom; the check under the lock resolves the policy (with the team the labels
    name) and reads the headroom again; after the create, the expiry Requesty confirmed is audited
    (the chain's head and the insert, in the append's own transaction), and the labels are recorded
    and audited: 25 statements on SQLite, 26 on PostgreSQL (advisory locks), as counted here, inside
    the test's transaction (4 of them are savepoints)."""
    rclient.post(URL, form_data(requester, name="warm"), **HTMX)  # first-use queries (content types)
    with django_assert_max_num_queries(26 if connection.vendor == "postgresql" else 25):
        response = rclient.post(URL, form_data(requester, name="counted"), **HTMX)
    assert response.status_code == 200 and IssuedKey.objects.filter(name="counted").exists()


def test_permission_levels_say_what_they_allow(rclient):
    html = rclient.get(URL).content.decode()
    assert '<option value="write" selected>write (can call models through the gateway)</option>' in html
    assert '<option value="read">read (read-only: cannot call models)</option>' in html
    assert '<option value="none" selected>none (no access to other keys)</option>' in html
