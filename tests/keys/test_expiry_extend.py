"""Extending a key's expiry from its page (issue 14): within the policy at once; beyond it through
the approval flow (kind EXPIRY); refusals audited; the views' permissions and htmx answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.test import Client

from keys.forms import new_nonce
from keys.models import ApprovalRequest, IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, alert_text, alerts, frozen_clock, mint

NOW = datetime(2030, 6, 1, 9, 30, tzinfo=UTC)


clock = frozen_clock(NOW, autouse=True)


@pytest.fixture
def key(rclient, requester, standin) -> IssuedKey:
    return mint(rclient, requester, name="ci", expires="30")


def writes(standin) -> list:
    """The calls that change something in Requesty (pages also read the organization's usage)."""
    return [c for c in standin.calls if c.method != "GET"]


def extend(client, key, **data):
    return client.post(f"/keys/{key.pk}/extend/", data, **HTMX)


def test_the_owner_extends_within_the_policy_and_requesty_is_told_first(rclient, requester, key, standin, clock):
    clock.shift(timedelta(days=10))
    rclient.force_login(requester)  # the session timed out meanwhile
    response = extend(rclient, key, expires="90")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="expiry"' in html
    assert "Requesty confirmed it" in html
    key.refresh_from_db()
    assert key.expires_at == NOW + timedelta(days=100)
    assert standin.keys[key.api_key_id]["expires_at"] == "2030-09-09T09:30:00Z"
    event = AuditEvent.objects.filter(action="key.expiry_set").latest("seq")
    assert event.actor_username == "rita" and "extended: expiry 2030-07-01 09:30 UTC -> 2030-09-09 09:30 UTC" in (
        event.detail
    )


@pytest.mark.parametrize(
    "data,message",
    [
        ({"expires": "date", "expires_on": "2030-06-15"}, "later expiry than the current one"),
        ({"expires": "date", "expires_on": "2030-06-01"}, "after today"),
        ({"expires": ""}, "Choose when the key expires"),
    ],
)
def test_unusable_extensions_change_nothing(rclient, key, standin, data, message):
    calls = len(writes(standin))
    response = extend(rclient, key, **data)
    assert response.status_code == 200 and message in alert_text(response)
    assert IssuedKey.objects.get(pk=key.pk).expires_at == key.expires_at and len(writes(standin)) == calls


def test_a_failed_requesty_call_changes_nothing_and_is_audited(rclient, key, standin):
    standin.inject(Fault.status(429, headers={"Retry-After": "7"}), method="POST", path="/v1/manage/apikey/")
    response = extend(rclient, key, expires="90")
    assert "Requesty is busy" in alert_text(response) and "in 7 seconds" in alert_text(response)
    assert IssuedKey.objects.get(pk=key.pk).expires_at == key.expires_at
    last = AuditEvent.objects.latest("seq")
    assert (last.action, last.outcome, last.upstream_status) == ("key.expiry_failed", "failure", 429)


def test_beyond_the_policy_goes_through_an_admins_approval(rclient, requester, key, aclient, standin, clock):
    response = extend(rclient, key, expires="date", expires_on="2031-01-01")
    html = response.content.decode()
    assert "at most 90 days" in alert_text(response) and "Ask an admin for a later expiry" in html
    assert AuditEvent.objects.latest("seq").action == "key.expiry_failed"  # refused: audited as denied
    assert AuditEvent.objects.latest("seq").outcome == "denied"
    short = rclient.post(
        f"/keys/{key.pk}/extend/request/", {"expires": "date", "expires_on": "2031-01-01", "reason": "short"}, **HTMX
    )
    assert "at least 10 characters" in alert_text(short) and not ApprovalRequest.objects.exists()
    within = {"expires": "30", "reason": "the project runs until then"}
    assert "within your policy" in " ".join(alerts(rclient.post(f"/keys/{key.pk}/extend/request/", within, **HTMX)))

    asked = {"expires": "date", "expires_on": "2031-01-01", "reason": "the project runs until then"}
    response = rclient.post(f"/keys/{key.pk}/extend/request/", asked, **HTMX)
    assert "sent to the portal admins" in response.content.decode()
    approval = ApprovalRequest.objects.get()
    assert (approval.kind, approval.key, approval.key_expires_at) == ("expiry", key, datetime(2031, 1, 1, tzinfo=UTC))
    assert AuditEvent.objects.get(action="approval.requested").api_key_id == key.api_key_id
    assert "a later expiry for the existing key" in aclient.get("/approvals/").content.decode()

    aclient.post(f"/approvals/{approval.pk}/decide/", {"decision": "approve", "comment": "ok"})
    (message,) = mail.outbox
    assert "extend the key “ci” to 2031-01-01 00:00 UTC" in message.body and f"/keys/{key.pk}/#expiry" in message.body
    page = rclient.get(f"/keys/{key.pk}/").content.decode()
    assert "Apply the approved expiry" in page

    response = extend(rclient, key, approval=str(approval.pk))
    assert "Requesty confirmed it" in response.content.decode()
    key.refresh_from_db()
    assert key.expires_at == datetime(2031, 1, 1, tzinfo=UTC)
    assert standin.keys[key.api_key_id]["expires_at"] == "2031-01-01T00:00:00Z"
    assert ApprovalRequest.objects.get().status == "used"
    assert f"(approval #{approval.pk})" in AuditEvent.objects.filter(action="key.expiry_set").latest("seq").detail
    again = extend(rclient, key, approval=str(approval.pk))
    assert "not valid any more" in alert_text(again)


def test_extending_starts_the_reminders_over(rclient, key, clock):
    IssuedKey.objects.filter(pk=key.pk).update(reminded_days=14)
    extend(rclient, key, expires="90")
    assert IssuedKey.objects.get(pk=key.pk).reminded_days is None


def test_the_views_permissions_methods_and_pages(client, rclient, r2client, aclient, key, standin):
    for path in ("extend/", "extend/request/", "rotate/"):
        url = f"/keys/{key.pk}/{path}"
        assert rclient.get(url).status_code == 405
        assert client.post(url).status_code == 302 and "/accounts/login/" in client.post(url)["Location"]
        assert r2client.post(url, {"expires": "90", "grace": "1"}).status_code == 404  # another person's key
    # An admin may extend anyone's key (no maximum), but not rotate it or ask in its owner's name.
    assert aclient.post(f"/keys/{key.pk}/extend/request/", {"expires": "never"}).status_code == 404
    assert aclient.post(f"/keys/{key.pk}/rotate/", {"grace": "1"}).status_code == 404
    page = aclient.post(f"/keys/{key.pk}/extend/", {"expires": "never"})
    assert page.status_code == 200 and "<html" in page.content.decode()  # without htmx: the whole page
    assert IssuedKey.objects.get(pk=key.pk).expires_at is None and standin.keys[key.api_key_id]["expires_at"] is None
    assert AuditEvent.objects.filter(action="key.expiry_set").latest("seq").actor_username == "ada"


def test_csrf_is_enforced_on_extend_and_rotate(key, requester, standin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(requester)
    calls = len(writes(standin))
    assert client.post(f"/keys/{key.pk}/extend/", {"expires": "90"}, **HTMX).status_code == 403
    rotate = {"grace": "1", "nonce": new_nonce(requester)}
    assert client.post(f"/keys/{key.pk}/rotate/", rotate, **HTMX).status_code == 403
    assert len(writes(standin)) == calls and IssuedKey.objects.count() == 1
