"""Changing a key's monthly limit (issue 4): within the policy, audited as requested before its
outcome, reserved before Requesty is called so an unsettled change still counts against the caps."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from keys import policy
from keys.forms import new_nonce
from keys.models import IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, alert_text, mint

MINT = {"name": "more", "monthly_limit": "5", "manage": "none", "completions": "write"}


def limit_events(key) -> list[tuple[str, str]]:
    events = AuditEvent.objects.filter(api_key_id=key.api_key_id, action__startswith="key.limit_").order_by("seq")
    return list(events.values_list("action", "outcome"))


def test_owner_changes_the_limit_within_policy(rkey, rclient, standin):
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "40.50"}, **HTMX)
    assert "now $40.50" in response.content.decode() and "<html" not in response.content.decode()
    assert standin.keys[rkey.api_key_id]["monthly_limit"] == Decimal("40.5")
    key = IssuedKey.objects.get()
    assert key.monthly_limit == Decimal("40.50")
    event = AuditEvent.objects.get(action="key.limit_changed")
    assert event.detail == "monthly limit 25.00 -> 40.50" and event.actor_username == "rita"


def test_a_limit_change_without_htmx_answers_the_whole_key_page(rkey, rclient, standin):
    """Plain HTML first: the key page comes back whole, with every section and its links."""
    html = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "40.50"}).content.decode()
    assert "<html" in html and "now $40.50" in html
    assert 'hx-get=""' not in html and 'href=""' not in html
    assert f'hx-get="/keys/{rkey.pk}/usage/"' in html
    # Every section of the key page, not only the limit's: the same forms as a plain GET of it.
    forms = re.compile(r'<form[^>]* action="([^"]+)"')
    assert forms.findall(html) == forms.findall(rclient.get(f"/keys/{rkey.pk}/").content.decode())
    assert f"/keys/{rkey.pk}/rotate/" in forms.findall(html)


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
    assert message in alert_text(response)
    assert standin.calls_to("POST", f"/v1/manage/apikey/{rkey.api_key_id}/limit") == []
    assert IssuedKey.objects.get().monthly_limit == Decimal("25")
    if value == "101":
        assert AuditEvent.objects.get(action="key.limit_failed").outcome == "denied"
    assert not AuditEvent.objects.filter(action="key.limit_requested").exists()


def test_admin_may_set_any_limit_including_no_cap(rkey, aclient, standin):
    aclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "0"}, **HTMX)
    assert IssuedKey.objects.get().monthly_limit == 0 and standin.keys[rkey.api_key_id]["monthly_limit"] == 0


def test_a_key_with_no_cap_takes_its_owners_whole_total(rkey, aclient, rclient, requester, standin):
    """An admin's 0 ("no cap") on someone's key is not $0 against their total: that key can spend
    without bound, so nothing more is minted or raised until it has a cap again (docs/security.md)."""
    other = mint(rclient, requester, "other", "10")
    aclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "0"}, **HTMX)
    room = policy.headroom(requester, policy.resolve(requester))
    assert (room.uncapped, room.money_left, room.committed) == (1, Decimal(0), Decimal("10"))
    refused = rclient.post("/keys/new/", {**MINT, "nonce": new_nonce(requester)}, **HTMX)
    assert refused.status_code == 403 and "no monthly cap" in refused.content.decode()
    raised = rclient.post(f"/keys/{other.pk}/limit/", {"monthly_limit": "11"}, **HTMX)
    assert "no monthly cap" in alert_text(raised) and IssuedKey.objects.get(pk=other.pk).monthly_limit == 10
    capped = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "50"}, **HTMX)  # from no cap: a lowering
    assert "now $50" in capped.content.decode()
    assert rclient.post("/keys/new/", {**MINT, "nonce": new_nonce(requester)}, **HTMX).status_code == 200


@pytest.mark.parametrize(
    "fault,phrase,outcome",
    [
        (Fault.status(500), "did not confirm", "unknown"),
        (Fault.delay(4), "did not confirm", "unknown"),
        (Fault.status(401), "misconfigured", "failure"),
        (Fault.status(429, headers={"Retry-After": "9"}), "in 9 seconds", "failure"),
    ],
)
def test_limit_upstream_failures_change_nothing_locally(rkey, rclient, standin, settings, fault, phrase, outcome):
    settings.REQUESTY_READ_TIMEOUT = 0.5  # the slow answer is given up on in 0.5 s, not 3
    standin.inject(fault, method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "30"}, **HTMX)
    assert phrase in alert_text(response)
    assert IssuedKey.objects.get().monthly_limit == Decimal("25")
    assert limit_events(rkey) == [("key.limit_requested", "pending"), ("key.limit_failed", outcome)]


def test_limit_of_a_key_deleted_outside(rkey, rclient, standin):
    standin.inject(Fault.status(404), method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "30"}, **HTMX)
    assert "no longer exists" in alert_text(response)
    key = IssuedKey.objects.get()
    assert key.status == "deleted" and key.monthly_limit == Decimal("25")


def test_raising_a_limit_respects_the_total_cap(rclient, requester, standin, settings):
    settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT = Decimal("60")
    first, second = mint(rclient, requester, "one", "25"), mint(rclient, requester, "two", "25")
    over = rclient.post(f"/keys/{first.pk}/limit/", {"monthly_limit": "36"}, **HTMX)
    assert "over your total of $60.00" in alert_text(over)
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
    assert "did not confirm" in alert_text(response) and "counts as $35.00" in alert_text(response)
    assert "now $" not in html and "Nothing was changed" not in html
    first.refresh_from_db()
    assert (first.monthly_limit, first.pending_limit) == (Decimal("25"), Decimal("35"))
    assert AuditEvent.objects.get(action="key.limit_failed").outcome == "unknown"
    # Requesty may hold 35 (here it does): 35 + 25 leaves nothing to mint or raise.
    data = {"name": "three", "monthly_limit": "1", "manage": "none", "completions": "write"}
    assert rclient.post("/keys/new/", {**data, "nonce": new_nonce(requester)}, **HTMX).status_code == 403
    raise_other = rclient.post(f"/keys/{second.pk}/limit/", {"monthly_limit": "26"}, **HTMX)
    assert "over your total of $60.00" in alert_text(raise_other) and limit_calls(standin, second) == []
    assert [c.path for c in standin.calls if c.method == "POST"].count("/v1/manage/apikey") == 2  # no mint


def test_a_definite_failure_releases_the_reservation(rkey, rclient, standin, settings):
    settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT = Decimal("60")
    standin.inject(Fault.status(429, headers={"Retry-After": "9"}), method="POST", path="/v1/manage/apikey/")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "60"}, **HTMX)
    assert "in 9 seconds" in alert_text(response)
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
    assert "still being confirmed" in alert_text(again)
    assert len(limit_calls(standin, rkey)) == 1
    # The refused second change requested nothing.
    assert limit_events(rkey) == [("key.limit_requested", "pending"), ("key.limit_failed", "unknown")]
    rkey.refresh_from_db()
    assert (rkey.monthly_limit, rkey.pending_limit) == (Decimal("25"), Decimal("30"))


def test_an_unconfirmed_lowering_still_counts_the_old_limit(rkey, rclient, requester, standin):
    standin.inject(Fault.status(500), method="POST", path=f"/v1/manage/apikey/{rkey.api_key_id}/limit")
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "5"}, **HTMX)
    assert "counts as $25.00" in alert_text(response)
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
    assert "over your total of $60.00" in alert_text(response)  # ...but change_limit does
    assert limit_calls(standin, rkey) == []
    rkey.refresh_from_db()
    assert (rkey.monthly_limit, rkey.pending_limit) == (Decimal("25"), None)
    assert limit_events(rkey) == [("key.limit_failed", "denied")]  # refused under the lock: no request
