"""reconcile_keys against the stand-in seeded with each case (issue 4, docs/security.md, issuance step 4)."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone

from keys.forms import new_nonce
from keys.models import Issuance, IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault


def mint(client, user, name="k"):
    data = {"name": name, "monthly_limit": "5", "manage": "none", "completions": "write", "nonce": new_nonce(user)}
    return client.post("/keys/new/", data, HTTP_HX_REQUEST="true")


def reconcile(*args) -> str:
    """Without a grace period, so unknown outcomes from this very test are settled."""
    out = StringIO()
    call_command("reconcile_keys", "--stale-minutes", "0", *args, stdout=out)
    return out.getvalue()


def line(output: str, label: str) -> int:
    (match,) = [ln for ln in output.splitlines() if ln.strip().endswith(label)]
    return int(match.split()[0])


def test_unknown_issuance_found_upstream_is_deleted(rclient, requester, standin):
    standin.inject(Fault.after_action_status(500), method="POST", path="/v1/manage/apikey")
    mint(rclient, requester, "lost-answer")
    (upstream_id,) = standin.keys
    issuance = Issuance.objects.get()
    assert issuance.state == "unknown" and not issuance.api_key_id
    output = reconcile()
    assert line(output, "unknown issuances found upstream and deleted") == 1
    assert standin.keys == {}
    issuance.refresh_from_db()
    assert issuance.state == "compensated" and issuance.api_key_id == upstream_id
    event = AuditEvent.objects.get(action="key.compensated")
    assert event.actor_username == "system:reconcile_keys"


def test_unknown_issuance_without_a_key_is_absent(rclient, requester, standin):
    standin.inject(Fault.status(502), method="POST", path="/v1/manage/apikey")
    mint(rclient, requester)
    output = reconcile()
    assert line(output, "unknown issuances proved never created") == 1
    assert Issuance.objects.get().state == "absent"
    assert AuditEvent.objects.filter(action="issuance.absent").count() == 1


def test_stale_requested_counts_but_a_fresh_one_does_not(requester, standin):
    old = Issuance.objects.create(
        nonce="a", actor=requester, name="old", monthly_limit=5, manage="none", completions="write"
    )
    Issuance.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    fresh = Issuance.objects.create(
        nonce="b", actor=requester, name="fresh", monthly_limit=5, manage="none", completions="write"
    )
    standin.add_key(f"fresh [portal:{fresh.reference}]")  # being minted right now: not a stranger
    out = StringIO()
    call_command("reconcile_keys", "--stale-minutes", "10", stdout=out)
    output = out.getvalue()
    assert Issuance.objects.get(pk=old.pk).state == "absent"
    assert Issuance.objects.get(pk=fresh.pk).state == "requested"
    assert line(output, "upstream keys with no portal record") == 0


def test_failed_list_changes_nothing(rclient, requester, standin):
    standin.inject(Fault.status(502), method="POST", path="/v1/manage/apikey")
    mint(rclient, requester)
    mint(rclient, requester, "real")
    for fault in (Fault.status(500), Fault.reset(), Fault.status(200, body='{"keys": "nope"}'), Fault.status(403)):
        standin.inject(fault, method="GET", path="/v1/manage/apikey")
        with pytest.raises(CommandError, match="nothing was changed"):
            reconcile()
    assert Issuance.objects.get(name="k").state == "unknown"
    assert IssuedKey.objects.get().status == "active"
    assert standin.calls_to("DELETE", "/v1/manage/apikey/") == []


def test_key_deleted_outside_the_portal_is_marked(rclient, requester, standin):
    mint(rclient, requester, "gone")
    key = IssuedKey.objects.get()
    # Deleted "in Requesty's dashboard": straight through the stand-in's API, not the portal.
    headers = {"Authorization": f"Bearer {settings.REQUESTY_ADMIN_TOKEN}"}
    requests.delete(f"{standin.base_url}/v1/manage/apikey/{key.api_key_id}", headers=headers, timeout=5)
    output = reconcile()
    assert line(output, "portal keys deleted outside the portal") == 1
    assert IssuedKey.objects.get().status == "deleted"
    assert AuditEvent.objects.filter(action="key.deleted_upstream").count() == 1


def test_strangers_are_reported_not_deleted(rclient, aclient, requester, admin_user, standin):
    stranger = standin.add_key("made-in-dashboard")
    sneaky = standin.add_key("sneaky", permissions={"manage": "write", "completions": "none"})
    aclient.post(
        "/keys/new/",
        {
            "name": "admin-made",
            "monthly_limit": "5",
            "manage": "write",
            "completions": "none",
            "nonce": new_nonce(admin_user),
        },
        HTTP_HX_REQUEST="true",
    )
    output = reconcile()
    assert line(output, "upstream keys with no portal record") == 2
    assert line(output, "upstream keys with manage rights no admin issued") == 1
    assert stranger["id"] in output and sneaky["id"] in output
    assert stranger["id"] in standin.keys and sneaky["id"] in standin.keys


def test_dry_run_changes_nothing(rclient, requester, standin):
    standin.inject(Fault.after_action_status(500), method="POST", path="/v1/manage/apikey")
    mint(rclient, requester)
    events = AuditEvent.objects.count()
    output = reconcile("--dry-run")
    assert "Dry run" in output and line(output, "unknown issuances found upstream and deleted") == 1
    assert len(standin.keys) == 1 and Issuance.objects.get().state == "unknown"
    assert AuditEvent.objects.count() == events


def test_deactivation_that_bypassed_signals_is_caught(rclient, requester, standin):
    mint(rclient, requester, "leaver-key")
    User.objects.filter(pk=requester.pk).update(is_active=False)  # no signal fires
    output = reconcile()
    assert line(output, "keys of deactivated or deleted users revoked") == 1
    assert IssuedKey.objects.get().status == "revoked" and standin.keys == {}


def test_running_twice_is_harmless(rclient, requester, standin):
    standin.inject(Fault.after_action_status(500), method="POST", path="/v1/manage/apikey")
    mint(rclient, requester)
    reconcile()
    events = AuditEvent.objects.count()
    again = reconcile()
    assert line(again, "unknown issuances found upstream and deleted") == 0
    assert AuditEvent.objects.count() == events


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_take_turns(standin):
    """A second reconciliation while one holds the lock does nothing."""
    from django.db import connection, connections

    from keys.reconcile import _LOCK_ID

    holder_ready, release = threading.Event(), threading.Event()

    def hold():
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [_LOCK_ID])
            holder_ready.set()
            release.wait(5)
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])
        connections["default"].close()

    thread = threading.Thread(target=hold)
    thread.start()
    holder_ready.wait(5)
    try:
        assert "Another reconciliation is running" in reconcile()
    finally:
        release.set()
        thread.join()
    assert connection.vendor == "postgresql"
    assert "Another reconciliation" not in reconcile()


def test_unknown_outcomes_get_a_grace_period(rclient, requester, standin):
    standin.inject(Fault.status(504), method="POST", path="/v1/manage/apikey")
    mint(rclient, requester)
    out = StringIO()
    call_command("reconcile_keys", stdout=out)  # default: 10 minutes
    assert Issuance.objects.get().state == "unknown"
    assert line(out.getvalue(), "upstream keys with no portal record") == 0


def test_a_late_key_for_a_settled_attempt_is_deleted(rclient, requester, standin):
    standin.inject(Fault.status(504), method="POST", path="/v1/manage/apikey")
    mint(rclient, requester, "slowpoke")
    reconcile()
    issuance = Issuance.objects.get()
    assert issuance.state == "absent"
    late = standin.add_key(issuance.upstream_name)  # Requesty finished creating it after all
    output = reconcile()
    assert late["id"] not in standin.keys
    assert "(late)" in output and line(output, "upstream keys with no portal record") == 0


def test_keys_minted_after_the_list_are_not_judged_by_it(rclient, requester, standin, monkeypatch):
    from keys import requesty

    real_list = requesty.list_keys

    def list_then_mint():
        keys = real_list()
        mint(rclient, requester, "born-during-reconcile")
        return keys

    monkeypatch.setattr(requesty, "list_keys", list_then_mint)
    output = reconcile()
    assert line(output, "portal keys deleted outside the portal") == 0
    assert IssuedKey.objects.get().status == "active"


@pytest.mark.parametrize("body", ['{"keys": []}', '{"keys": [{"id": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}]}'])
def test_an_implausible_list_changes_nothing(rclient, requester, standin, body):
    mint(rclient, requester)
    standin.inject(Fault.status(200, body=body), method="GET", path="/v1/manage/apikey")
    with pytest.raises(CommandError, match="looks partial or wrong"):
        reconcile()
    assert IssuedKey.objects.get().status == "active"


# --- Limit changes whose outcome is unknown ---------------------------------------------------------
@pytest.mark.parametrize(
    "fault,held,action,outcome",
    [
        (Fault.after_action_status(502), 9, "key.limit_changed", "success"),  # Requesty applied it
        (Fault.status(504), 5, "key.limit_failed", "failure"),  # it did not
    ],
)
def test_unknown_limit_change_is_settled_from_the_list(rclient, requester, standin, fault, held, action, outcome):
    mint(rclient, requester)
    key = IssuedKey.objects.get()
    standin.inject(fault, method="POST", path=f"/v1/manage/apikey/{key.api_key_id}/limit")
    rclient.post(f"/keys/{key.pk}/limit/", {"monthly_limit": "9"}, HTTP_HX_REQUEST="true")
    key.refresh_from_db()
    assert (key.monthly_limit, key.pending_limit) == (5, 9)
    assert line(reconcile("--dry-run"), "unconfirmed limit changes settled") == 1
    key.refresh_from_db()
    assert key.pending_limit == 9  # a dry run changes nothing
    assert line(reconcile(), "unconfirmed limit changes settled") == 1
    key.refresh_from_db()
    assert (key.monthly_limit, key.pending_limit) == (held, None)
    event = AuditEvent.objects.filter(action=action).latest("seq")
    assert event.outcome == outcome and event.actor_username == "system:reconcile_keys"
    assert AuditEvent.objects.get(action="key.limit_requested").actor_username == "rita"
    assert f"Requesty holds {held:.2f}" in event.detail
    assert line(reconcile(), "unconfirmed limit changes settled") == 0


def test_unknown_limit_change_gets_a_grace_period(rclient, requester, standin):
    mint(rclient, requester)
    key = IssuedKey.objects.get()
    standin.inject(Fault.status(504), method="POST", path=f"/v1/manage/apikey/{key.api_key_id}/limit")
    rclient.post(f"/keys/{key.pk}/limit/", {"monthly_limit": "9"}, HTTP_HX_REQUEST="true")
    call_command("reconcile_keys", stdout=StringIO())  # default: 10 minutes
    key.refresh_from_db()
    assert key.pending_limit == 9


# --- Limits changed outside the portal --------------------------------------------------------------
def test_a_limit_changed_outside_the_portal_is_adopted_and_counted(rclient, requester, standin):
    """Requesty enforces what its dashboard set: the caps must count that, not the portal's old value."""
    from decimal import Decimal

    from keys import policy

    mint(rclient, requester)
    key = IssuedKey.objects.get()
    standin.keys[key.api_key_id]["monthly_limit"] = Decimal(40)
    assert line(reconcile("--dry-run"), "limits changed outside the portal adopted") == 1
    key.refresh_from_db()
    assert key.monthly_limit == 5  # a dry run changes nothing
    assert line(reconcile(), "limits changed outside the portal adopted") == 1
    key.refresh_from_db()
    assert key.monthly_limit == 40
    event = AuditEvent.objects.get(action="key.limit_changed")
    assert event.actor_username == "system:reconcile_keys" and "outside the portal 5.00 -> 40.00" in event.detail
    assert policy.headroom(requester, policy.resolve(requester)).committed == 40
    assert line(reconcile(), "limits changed outside the portal adopted") == 0


def test_a_portal_change_made_while_the_list_was_fetched_is_not_overwritten(rclient, requester, standin, monkeypatch):
    from decimal import Decimal

    from keys import requesty

    mint(rclient, requester)
    key = IssuedKey.objects.get()
    standin.keys[key.api_key_id]["monthly_limit"] = Decimal(40)  # the list will say 40 ...
    real = requesty.list_keys

    def list_then_change(*args, **kwargs):
        keys = real(*args, **kwargs)
        IssuedKey.objects.filter(pk=key.pk).update(monthly_limit=7)  # ... the portal set 7 meanwhile
        return keys

    monkeypatch.setattr(requesty, "list_keys", list_then_change)
    reconcile()
    key.refresh_from_db()
    assert key.monthly_limit == 7 and not AuditEvent.objects.filter(action="key.limit_changed").exists()


def _hide(standin, api_key_id: str) -> dict:
    """The key leaves Requesty's list for a while (the stand-in's store, as a restore would see it)."""
    with standin._lock:
        return standin._keys.pop(api_key_id)


def _show(standin, key: dict) -> None:
    with standin._lock:
        standin._keys[key["id"]] = key


def test_a_key_marked_deleted_outside_that_reappears_is_active_again(rclient, requester, standin, settings):
    """A list that left a key out (or a restore in Requesty) marked it deleted; the next complete
    list shows it: it still works and spends, so it is active again, counted and revocable."""
    mint(rclient, requester, "back")
    mint(rclient, requester, "other")  # keeps the first list plausible
    key = IssuedKey.objects.get(name="back")
    hidden = _hide(standin, key.api_key_id)
    assert line(reconcile(), "portal keys deleted outside the portal") == 1
    assert IssuedKey.objects.get(pk=key.pk).status == "deleted"
    hidden["monthly_limit"] = hidden["monthly_limit"] + 3  # changed in Requesty meanwhile
    _show(standin, hidden)
    output = reconcile()
    assert line(output, "keys marked deleted outside the portal found again, active again") == 1
    key.refresh_from_db()
    assert (key.status, key.ended_at, key.monthly_limit) == ("active", None, 8)
    event = AuditEvent.objects.get(action="key.reappeared")
    assert event.actor_username == "system:reconcile_keys" and "5.00 -> 8.00" in event.detail
    assert line(reconcile(), "keys marked deleted outside the portal found again, active again") == 0
    assert rclient.post(f"/keys/{key.pk}/revoke/").status_code == 302  # revocable again
    assert IssuedKey.objects.get(pk=key.pk).status == "revoked"


def test_a_reappeared_key_of_a_deactivated_owner_is_revoked(rclient, requester, standin):
    mint(rclient, requester, "back")
    mint(rclient, requester, "other")
    key = IssuedKey.objects.get(name="back")
    hidden = _hide(standin, key.api_key_id)
    assert line(reconcile(), "portal keys deleted outside the portal") == 1
    _show(standin, hidden)
    User.objects.filter(pk=requester.pk).update(is_active=False)  # bypasses the signal
    reconcile()
    assert IssuedKey.objects.get(pk=key.pk).status == "revoked" and key.api_key_id not in standin.keys
