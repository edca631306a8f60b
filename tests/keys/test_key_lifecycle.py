"""My keys, live spend, usage, limit changes and revocation (issue 4), over HTTP to the stand-in."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from keys import policy
from keys.forms import new_nonce
from keys.models import Issuance, IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault

HTMX = {"HTTP_HX_REQUEST": "true"}


def mint(client, user, name="laptop", limit="25") -> IssuedKey:
    data = {"name": name, "monthly_limit": limit, "manage": "none", "completions": "write", "nonce": new_nonce(user)}
    assert client.post("/keys/new/", data, **HTMX).status_code == 200
    return IssuedKey.objects.get(name=name, owner=user)


@pytest.fixture
def rkey(rclient, requester, standin) -> IssuedKey:
    return mint(rclient, requester)


@pytest.fixture
def r2client(requester2) -> Client:
    client = Client()
    client.force_login(requester2)
    return client


def alerts(response) -> str:
    return " ".join(re.findall(r'role="alert"[^>]*>([^<]*)', response.content.decode()))


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


# --- My keys --------------------------------------------------------------------------------------
def test_my_keys_lists_only_mine_newest_first(rclient, r2client, requester, requester2, standin):
    mint(rclient, requester, "first")
    mint(rclient, requester, "second")
    mint(r2client, requester2, "theirs")
    html = rclient.get("/keys/").content.decode()
    assert html.index(">second<") < html.index(">first<") and "theirs" not in html
    assert "manage none, completions write" in html and "active" in html


def test_unknown_outcomes_are_listed_honestly(rclient, requester, standin):
    standin.inject(Fault.status(502), method="POST", path="/v1/manage/apikey")
    rclient.post(
        "/keys/new/",
        {
            "name": "limbo",
            "monthly_limit": "5",
            "manage": "none",
            "completions": "write",
            "nonce": new_nonce(requester),
        },
    )
    html = rclient.get("/keys/").content.decode()
    assert "limbo" in html and "outcome unknown" in html and Issuance.objects.get().reference in html


def test_admin_sees_all_and_filters(aclient, rclient, r2client, requester, requester2, standin):
    mint(rclient, requester, "ritas")
    key = mint(r2client, requester2, "robs")
    key.status = "revoked"
    key.save()
    html = aclient.get("/keys/").content.decode()
    assert "ritas" in html and "robs" in html
    assert "robs" not in aclient.get("/keys/?owner=rita").content.decode()
    only_revoked = aclient.get("/keys/?status=revoked").content.decode()
    assert "robs" in only_revoked and "ritas" not in only_revoked


def test_home_links_to_keys_and_form(rclient):
    html = rclient.get("/").content.decode()
    assert 'href="/keys/"' in html and 'href="/keys/new/"' in html


# --- Spend ----------------------------------------------------------------------------------------
def test_spend_bar_comes_from_requesty_and_is_cached(rkey, rclient, standin):
    standin.keys[rkey.api_key_id]["monthly_spend"] = Decimal("5")
    html = rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX).content.decode()
    assert '<progress max="100" value="20"' in html and "$5" in html and "of $25" in html
    rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX)
    assert len(standin.calls_to("GET", f"/v1/manage/apikey/{rkey.api_key_id}")) == 1  # second load was cached


def test_list_loads_spend_per_row_lazily(rkey, rclient, standin):
    html = rclient.get("/keys/").content.decode()
    assert f'hx-get="/keys/{rkey.pk}/spend/" hx-trigger="load"' in html
    assert standin.calls_to("GET", "/v1/manage/apikey/") == []  # the page itself never waits on Requesty


@pytest.mark.parametrize(
    "fault", [Fault.status(500), Fault.status(401), Fault.delay(4), Fault.status(200, body="nope")]
)
def test_spend_failure_offers_a_retry(rkey, rclient, standin, fault):
    standin.inject(fault, method="GET")
    html = rclient.get(f"/keys/{rkey.pk}/spend/", **HTMX).content.decode()
    assert 'role="alert"' in html and "Retry" in html
    assert IssuedKey.objects.get().status == "active"


def test_spend_of_a_key_requesty_does_not_know(rkey, rclient, standin):
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


@pytest.mark.parametrize(
    "fault", [Fault.status(500), Fault.status(403), Fault.status(404), Fault.status(200, body="{}")]
)
def test_usage_failures_are_alerts(rkey, rclient, standin, fault):
    standin.inject(fault, method="GET")
    assert 'role="alert"' in rclient.get(f"/keys/{rkey.pk}/usage/", **HTMX).content.decode()


# --- Limit ----------------------------------------------------------------------------------------
def test_owner_changes_the_limit_within_policy(rkey, rclient, standin):
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "40.50"}, **HTMX)
    assert "now $40.50" in response.content.decode() and "<html" not in response.content.decode()
    assert standin.keys[rkey.api_key_id]["monthly_limit"] == Decimal("40.5")
    key = IssuedKey.objects.get()
    assert key.monthly_limit == Decimal("40.50")
    event = AuditEvent.objects.get(action="key.limit_changed")
    assert event.detail == "monthly limit 25.00 -> 40.50" and event.actor_username == "rita"


def limit_events(key) -> list[tuple[str, str]]:
    events = AuditEvent.objects.filter(api_key_id=key.api_key_id, action__startswith="key.limit_").order_by("seq")
    return list(events.values_list("action", "outcome"))


def test_a_limit_change_is_audited_as_requested_before_its_outcome(rkey, rclient, standin):
    rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "40.50"}, **HTMX)
    assert limit_events(rkey) == [("key.limit_requested", "pending"), ("key.limit_changed", "success")]
    requested = AuditEvent.objects.get(action="key.limit_requested")
    assert requested.detail == "monthly limit 25.00 -> 40.50 requested"
    assert requested.monthly_limit == Decimal("40.50") and requested.api_key_id == rkey.api_key_id
    assert requested.actor_username == "rita" and requested.source_ip == "127.0.0.1"
    assert requested.upstream_status is None


def test_a_crash_after_the_reservation_leaves_the_request_in_the_log(rkey, requester, standin, monkeypatch):
    """The reservation and its audit event commit together before Requesty is called, so an
    attempt whose outcome is never recorded (the process dies) is still in the log, for
    reconciliation to settle."""
    from keys import lifecycle, requesty

    def crash(*args, **kwargs):
        raise RuntimeError("worker died mid-call")

    monkeypatch.setattr(requesty, "update_limit", crash)
    with pytest.raises(RuntimeError):
        lifecycle.change_limit(rkey, Decimal("30"), actor=requester, source_ip="10.0.0.7")
    rkey.refresh_from_db()
    assert (rkey.monthly_limit, rkey.pending_limit) == (Decimal("25"), Decimal("30"))
    assert limit_events(rkey) == [("key.limit_requested", "pending")]
    requested = AuditEvent.objects.get(action="key.limit_requested")
    assert requested.detail == "monthly limit 25.00 -> 30.00 requested" and requested.source_ip == "10.0.0.7"


@pytest.mark.parametrize(
    "value,message", [("1e3", "plain digits"), ("0", "more than 0"), ("101", "at most $100"), ("", "Enter")]
)
def test_limit_validation(rkey, rclient, standin, value, message):
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": value}, **HTMX)
    assert message in alerts(response)
    assert standin.calls_to("POST", f"/v1/manage/apikey/{rkey.api_key_id}/limit") == []
    assert IssuedKey.objects.get().monthly_limit == Decimal("25")
    if value == "101":
        assert AuditEvent.objects.get(action="key.limit_failed").outcome == "denied"
    assert not AuditEvent.objects.filter(action="key.limit_requested").exists()


def test_admin_may_set_any_limit_including_no_cap(rkey, aclient, standin):
    aclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "0"}, **HTMX)
    assert IssuedKey.objects.get().monthly_limit == 0 and standin.keys[rkey.api_key_id]["monthly_limit"] == 0


@pytest.mark.parametrize(
    "fault,phrase,outcome",
    [
        (Fault.status(500), "did not confirm", "unknown"),
        (Fault.delay(4), "did not confirm", "unknown"),
        (Fault.status(401), "misconfigured", "failure"),
        (Fault.status(429, headers={"Retry-After": "9"}), "in 9 seconds", "failure"),
    ],
)
def test_limit_upstream_failures_change_nothing_locally(rkey, rclient, standin, fault, phrase, outcome):
    standin.inject(fault, method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "30"}, **HTMX)
    assert phrase in alerts(response)
    assert IssuedKey.objects.get().monthly_limit == Decimal("25")
    assert limit_events(rkey) == [("key.limit_requested", "pending"), ("key.limit_failed", outcome)]


def test_limit_of_a_key_deleted_outside(rkey, rclient, standin):
    standin.inject(Fault.status(404), method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "30"}, **HTMX)
    assert "no longer exists" in alerts(response)
    key = IssuedKey.objects.get()
    assert key.status == "deleted" and key.monthly_limit == Decimal("25")


# --- Revoke ---------------------------------------------------------------------------------------
def test_revoke_asks_for_confirmation_naming_the_key(rkey, rclient, standin):
    html = rclient.get(f"/keys/{rkey.pk}/revoke/", **HTMX).content.decode()
    assert "Revoke “laptop”?" in html and "Yes, revoke “laptop”" in html and "<html" not in html
    assert rkey.api_key_id in standin.keys  # asking is not revoking


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
    assert alerts(response)
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


def test_raising_a_limit_respects_the_total_cap(rclient, requester, standin, settings):
    settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT = Decimal("60")
    first, second = mint(rclient, requester, "one", "25"), mint(rclient, requester, "two", "25")
    over = rclient.post(f"/keys/{first.pk}/limit/", {"monthly_limit": "36"}, **HTMX)
    assert "over your total of $60.00" in alerts(over)
    assert standin.calls_to("POST", f"/v1/manage/apikey/{first.api_key_id}/limit") == []
    assert rclient.post(f"/keys/{first.pk}/limit/", {"monthly_limit": "35"}, **HTMX).status_code == 200
    assert IssuedKey.objects.get(pk=first.pk).monthly_limit == Decimal("35")
    lowered = rclient.post(f"/keys/{second.pk}/limit/", {"monthly_limit": "20"}, **HTMX)  # lowering is always fine
    assert "now $20" in lowered.content.decode()


# --- Limit changes reserve their new limit before calling Requesty --------------------------------
def limit_calls(standin, key):
    return standin.calls_to("POST", f"/v1/manage/apikey/{key.api_key_id}/limit")


def test_a_raise_with_an_unknown_outcome_keeps_counting_against_the_total(rclient, requester, standin, settings):
    settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT = Decimal("60")
    first, second = mint(rclient, requester, "one", "25"), mint(rclient, requester, "two", "25")
    standin.inject(Fault.after_action_status(502), method="POST", path=f"/v1/manage/apikey/{first.api_key_id}/limit")
    response = rclient.post(f"/keys/{first.pk}/limit/", {"monthly_limit": "35"}, **HTMX)
    html = response.content.decode()
    # Honest: neither "changed" nor "not changed", and the reservation is explained.
    assert "did not confirm" in alerts(response) and "counts as $35.00" in alerts(response)
    assert "now $" not in html and "Nothing was changed" not in html
    first.refresh_from_db()
    assert (first.monthly_limit, first.pending_limit) == (Decimal("25"), Decimal("35"))
    assert AuditEvent.objects.get(action="key.limit_failed").outcome == "unknown"
    # Requesty may hold 35 (here it does): 35 + 25 leaves nothing to mint or raise.
    data = {"name": "three", "monthly_limit": "1", "manage": "none", "completions": "write"}
    assert rclient.post("/keys/new/", {**data, "nonce": new_nonce(requester)}, **HTMX).status_code == 403
    raise_other = rclient.post(f"/keys/{second.pk}/limit/", {"monthly_limit": "26"}, **HTMX)
    assert "over your total of $60.00" in alerts(raise_other) and limit_calls(standin, second) == []
    assert [c.path for c in standin.calls if c.method == "POST"].count("/v1/manage/apikey") == 2  # no mint


def test_a_definite_failure_releases_the_reservation(rkey, rclient, standin, settings):
    settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT = Decimal("60")
    standin.inject(Fault.status(429, headers={"Retry-After": "9"}), method="POST", path="/v1/manage/apikey/")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "60"}, **HTMX)
    assert "in 9 seconds" in alerts(response)
    rkey.refresh_from_db()
    assert (rkey.monthly_limit, rkey.pending_limit) == (Decimal("25"), None)
    assert rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "60"}, **HTMX).status_code == 200
    rkey.refresh_from_db()
    assert (rkey.monthly_limit, rkey.pending_limit) == (Decimal("60"), None)


def test_a_key_deleted_outside_drops_its_reservation(rkey, rclient, standin):
    standin.inject(Fault.status(404), method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "30"}, **HTMX)
    rkey.refresh_from_db()
    assert rkey.status == "deleted" and rkey.pending_limit is None


def test_a_second_change_while_one_is_pending_is_refused(rkey, rclient, standin):
    standin.inject(Fault.status(504), method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "30"}, **HTMX)
    assert "being confirmed with Requesty" in rclient.get(f"/keys/{rkey.pk}/").content.decode()
    again = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "5"}, **HTMX)  # lowering too
    assert "still being confirmed" in alerts(again)
    assert len(limit_calls(standin, rkey)) == 1
    # The refused second change requested nothing.
    assert limit_events(rkey) == [("key.limit_requested", "pending"), ("key.limit_failed", "unknown")]
    rkey.refresh_from_db()
    assert (rkey.monthly_limit, rkey.pending_limit) == (Decimal("25"), Decimal("30"))


def test_an_unconfirmed_lowering_still_counts_the_old_limit(rkey, rclient, requester, standin):
    standin.inject(Fault.status(500), method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "5"}, **HTMX)
    assert "counts as $25.00" in alerts(response)
    assert policy.headroom(requester, policy.resolve(requester)).committed == Decimal("25")


def test_the_caps_are_checked_again_under_the_lock(rkey, rclient, requester, standin, monkeypatch, settings):
    """The form's check is advisory (it runs outside any lock); change_limit decides, refusing with
    the same kind of alert and without calling Requesty."""
    import types

    import keys.forms

    settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT = Decimal("60")
    mint(rclient, requester, "two", "25")
    blind = types.SimpleNamespace(**{n: getattr(policy, n) for n in dir(policy) if not n.startswith("__")})
    blind.headroom = lambda *a, **k: policy.Headroom(0, Decimal(0), None, None)
    monkeypatch.setattr(keys.forms, "policy", blind)  # the form no longer sees what is held...
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "36"}, **HTMX)
    assert "over your total of $60.00" in alerts(response)  # ...but change_limit does
    assert limit_calls(standin, rkey) == []
    rkey.refresh_from_db()
    assert (rkey.monthly_limit, rkey.pending_limit) == (Decimal("25"), None)
    assert limit_events(rkey) == [("key.limit_failed", "denied")]  # refused under the lock: no request


# --- Paging the list ------------------------------------------------------------------------------
def make_issuances(owner, count: int, prefix: str, state: str) -> list[Issuance]:
    """`count` issuance records named `<prefix>-000`... in one statement, with no Requesty call."""
    return Issuance.objects.bulk_create(
        Issuance(
            nonce=f"{prefix}-{i}",
            actor=owner,
            name=f"{prefix}-{i:03d}",
            monthly_limit=5,
            manage="none",
            completions="write",
            state=state,
        )
        for i in range(count)
    )


def make_keys(owner, count: int, prefix: str, status: str = "active", tie: int = 7) -> list[IssuedKey]:
    """`count` keys made directly (no Requesty): every `tie` of them share one creation time, and
    time runs against id order, so only a (created_at, id) order pages them right."""
    issuances = make_issuances(owner, count, prefix, "issued")
    keys = IssuedKey.objects.bulk_create(
        IssuedKey(
            api_key_id=str(uuid.uuid4()),
            issuance=issuance,
            owner=owner,
            name=issuance.name,
            monthly_limit=5,
            manage="none",
            completions="write",
            status=status,
        )
        for issuance in issuances
    )
    base = timezone.now() - timedelta(days=1)
    for i, key in enumerate(keys):
        IssuedKey.objects.filter(pk=key.pk).update(created_at=base + timedelta(minutes=count - i // tie))
    return keys


def row_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="key-(\d+)">', response.content.decode())]


def link(response, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', response.content.decode())
    return found.group(1).replace("&amp;", "&") if found else None


def walk(client, url: str, rel: str = "next") -> list[list[int]]:
    """Follow the pager's links to the end: every page's row ids, in order."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(row_ids(response))
        url = link(response, rel)
        assert len(pages) < 10, "the pager loops"
    return pages


def newest_first(keys) -> list[int]:
    return list(
        IssuedKey.objects.filter(pk__in=[k.pk for k in keys])
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
    )


def test_admin_pages_through_every_key_once(aclient, requester, requester2):
    keys = make_keys(requester, 70, "rita") + make_keys(requester2, 50, "rob")
    first = aclient.get("/keys/")
    html = first.content.decode()
    assert len(row_ids(first)) == 50 and "Showing keys 1–50 of 120" in html and link(first, "prev") is None
    pages = walk(aclient, "/keys/")
    assert [len(p) for p in pages] == [50, 50, 20]
    assert sum(pages, []) == newest_first(keys)  # no gap, no duplicate, newest first, ties by id
    last = aclient.get(link(aclient.get(link(first, "next")), "next"))
    assert "Showing keys 101–120 of 120" in last.content.decode() and link(last, "next") is None
    assert walk(aclient, link(last, "prev"), rel="prev") == pages[1::-1]  # and back again
    oldest = aclient.get("/keys/?last=1")
    assert row_ids(oldest) == sum(pages, [])[-50:] and link(oldest, "next") is None
    assert "Showing keys 71–120 of 120" in oldest.content.decode()
    second = link(first, "next")
    for page_ids, url in zip(pages, ["/keys/", second, link(aclient.get(second), "next")], strict=True):
        page = aclient.get(url).content.decode()  # every page's rows load their spend
        assert all(f'hx-get="/keys/{pk}/spend/" hx-trigger="load"' in page for pk in page_ids)


def test_filters_survive_paging(aclient, requester, requester2):
    mine = make_keys(requester, 70, "rita")
    make_keys(requester, 10, "rita-old", status="revoked")
    make_keys(requester2, 60, "rob")
    first = aclient.get("/keys/?owner=rita&status=active")
    assert "Showing keys 1–50 of 70" in first.content.decode()
    older = link(first, "next")
    assert "owner=rita" in older and "status=active" in older
    pages = walk(aclient, "/keys/?owner=rita&status=active")
    assert sum(pages, []) == newest_first(mine)
    assert 'value="rita"' in aclient.get(older).content.decode()  # the form still shows the filter


def test_a_requester_never_pages_into_others_keys(rclient, requester, requester2):
    mine, theirs = make_keys(requester, 60, "rita"), make_keys(requester2, 60, "rob")
    pages = walk(rclient, "/keys/")
    assert sum(pages, []) == newest_first(mine)
    assert "of 60" in rclient.get("/keys/").content.decode()
    mine_ids = {k.pk for k in mine}
    for cursor in ("before", "after"):
        for other in (theirs[10].pk, theirs[-1].pk, 10**9):  # someone else's key, or none: the same answer
            response = rclient.get(f"/keys/?{cursor}={other}")
            assert response.status_code == 200 and set(row_ids(response)) <= mine_ids
            assert (
                row_ids(response) == pages[0] and "no longer points at a key you can see" in response.content.decode()
            )
    assert set(row_ids(rclient.get("/keys/?owner=rob"))) <= mine_ids  # owner is an admin filter
    for query in ("before=abc", "after=1.5", "before=-3", "before=0", f"before={10**30}", "before=1&after=2"):
        assert rclient.get(f"/keys/?{query}").status_code == 400, query


def test_unknown_outcomes_say_how_many_are_not_shown(rclient, requester):
    make_issuances(requester, 105, "limbo", "unknown")
    html = rclient.get("/keys/").content.decode()
    assert "105 key requests have an unknown outcome; showing the newest 100" in html
    assert html.count("being checked with Requesty") == 100


def test_a_page_costs_the_same_queries_however_many_keys(aclient, requester, requester2, django_assert_max_num_queries):
    keys = make_keys(requester, 60, "rita") + make_keys(requester2, 60, "rob")
    for actor in (requester, requester2):  # unsettled issuances of several people
        make_issuances(actor, 10, f"limbo-{actor.username}", "unknown")
    IssuedKey.objects.filter(pk__in=[k.pk for k in keys[:15]]).update(revocation_failed_at=timezone.now())
    for more in (0, 150):
        make_keys(requester2, more, f"more{more}")
        for query in ("", f"?before={keys[70].pk}", f"?after={keys[100].pk}", "?last=1", "?owner=rob&status=active"):
            with django_assert_max_num_queries(14):
                assert aclient.get(f"/keys/{query}").status_code == 200
