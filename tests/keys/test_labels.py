"""Labels in Requesty (keys/labels.py): set on create, merged with labels set elsewhere, a failed call
never costing the key and retried by housekeeping, refreshed when the owner's team changes, and
`manage.py label_keys` for keys made before."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import DatabaseError

from keys import labels
from keys.models import IssuedKey, OnboardingTemplate, SpendingPolicy
from portal.audit import chain
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, form_data, mint
from tests.keys.spend_helpers import issued


def label_calls(standin, key) -> list:
    return standin.calls_to("POST", f"/v1/manage/apikey/{key.api_key_id}/label")


def team(user, name: str) -> Group:
    group = Group.objects.create(name=name)
    SpendingPolicy.objects.create(group=group, max_key_limit=50, max_total_limit=500, max_active_keys=10)
    user.groups.add(group)
    return group


def housekeeping(*jobs) -> str:
    out = StringIO()
    call_command("housekeeping", *[a for job in jobs for a in ("--only", job)], stdout=out, stderr=out)
    return out.getvalue()


def test_a_new_key_carries_owner_team_reference_and_template(standin, requester, rclient):
    team(requester, "data-science")
    OnboardingTemplate.objects.create(slug="hackweek", name_pattern="{username}-hack", monthly_limit=5)
    response = rclient.post("/keys/new/", form_data(requester, name="hack", template="hackweek"), **HTMX)
    assert response.status_code == 200
    key = IssuedKey.objects.get(name="hack")
    expected = {
        "owner": "rita",
        "owner_email": "rita@example.com",
        "team": "data-science",
        "portal_ref": key.issuance.reference,
        "template": "hackweek",
    }
    assert standin.keys[key.api_key_id]["labels"] == expected
    assert key.labels_applied == expected
    assert AuditEvent.objects.filter(action="key.labelled", api_key_id=key.api_key_id).exists()


def test_a_new_key_names_the_first_team_by_name_and_an_admins_too(standin, requester, admin_user, rclient, aclient):
    """The team is read with the policy when minting (Policy.team); an admin's policy comes from no
    group, so their team is read for the label."""
    team(requester, "ops")
    team(requester, "data")
    team(admin_user, "finance")
    mint(rclient, requester, name="two-teams")
    mint(aclient, admin_user, name="admins")
    assert IssuedKey.objects.get(name="two-teams").labels_applied["team"] == "data"
    assert IssuedKey.objects.get(name="admins").labels_applied["team"] == "finance"
    assert labels.due().due == []  # what was sent is what housekeeping would send


def test_a_failed_label_call_keeps_the_key_and_housekeeping_retries_it(standin, requester, rclient, canary):
    # The two calls after the create, not the create: the expiry and the label call, side by side.
    standin.inject(Fault.status(503), method="POST", path="/v1/manage/apikey/", times=2)
    response = rclient.post("/keys/new/", form_data(requester, name="kept"), **HTMX)
    assert response.status_code == 200 and canary in response.content.decode()  # the secret is shown
    key = IssuedKey.objects.get(name="kept")
    assert key.status == "active" and key.labels_applied is None
    assert standin.keys[key.api_key_id]["labels"] == {}
    failed = AuditEvent.objects.get(action="key.label_failed")
    assert failed.outcome == "unknown" and failed.upstream_status == 503
    assert "1 labelled, 0 failed" in housekeeping("labels")
    assert standin.keys[key.api_key_id]["labels"]["owner"] == "rita"
    key.refresh_from_db()
    assert key.labels_applied["owner"] == "rita"
    assert labels.due().due == []  # nothing left to send


@pytest.mark.django_db(transaction=True)  # a real commit (or its rollback) is what is tested
def test_confirmed_labels_are_remembered_only_with_their_event(standin, requester, rclient, canary, monkeypatch):
    def record(action, *args, **kwargs):
        if action == AuditEvent.Action.KEY_LABELLED:
            raise DatabaseError("the audit append failed")
        return appended(action, *args, **kwargs)

    appended = chain.record
    monkeypatch.setattr(chain, "record", record)
    response = rclient.post("/keys/new/", form_data(requester, name="unsaid"), **HTMX)
    assert response.status_code == 200 and canary in response.content.decode()  # the key is never lost
    key = IssuedKey.objects.get(name="unsaid")
    assert standin.keys[key.api_key_id]["labels"]["owner"] == "rita"
    assert key.labels_applied is None  # not remembered without its event: housekeeping sends them again
    assert labels.due().due == [(key, labels.wanted(key, ""))]


def test_labels_set_elsewhere_are_kept_and_a_team_change_is_sent(standin, requester, rclient):
    key = mint(rclient, requester, name="merge")
    standin.keys[key.api_key_id]["labels"]["cost_center"] = "CC-7"  # set in Requesty's dashboard
    standin.keys[key.api_key_id]["labels"]["team"] = "stale"
    team(requester, "platform")
    before = len(label_calls(standin, key))
    assert "1 labelled" in housekeeping("labels")
    upstream = standin.keys[key.api_key_id]["labels"]
    assert upstream["cost_center"] == "CC-7" and upstream["team"] == "platform" and upstream["owner"] == "rita"
    assert len(label_calls(standin, key)) == before + 1
    # Leaving every team removes the label (and only that one).
    requester.groups.clear()
    call_command("label_keys", stdout=StringIO())
    upstream = standin.keys[key.api_key_id]["labels"]
    assert "team" not in upstream and upstream["cost_center"] == "CC-7"


def test_label_keys_labels_older_keys_and_dry_run_calls_nothing(standin, requester):
    old = issued(standin, requester, "from-before")
    out = StringIO()
    call_command("label_keys", "--dry-run", stdout=out)
    assert "would label from-before" in out.getvalue() and "1 key(s) would be labelled" in out.getvalue()
    assert standin.calls == []
    call_command("label_keys", stdout=out)
    assert standin.keys[old.api_key_id]["labels"]["portal_ref"] == old.issuance.reference
    old.refresh_from_db()
    assert old.labels_applied is not None


def test_label_keys_fails_loudly_when_requesty_refuses(standin, requester):
    key = issued(standin, requester, "k")
    standin.inject(Fault.status(400), method="POST", path=f"/v1/manage/apikey/{key.api_key_id}/label")
    with pytest.raises(CommandError, match="could not be labelled"):
        call_command("label_keys", stdout=StringIO())
    assert AuditEvent.objects.get(action="key.label_failed").outcome == "failure"
