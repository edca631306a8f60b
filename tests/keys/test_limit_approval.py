"""A higher limit for an existing key (issue 13, item 5): beyond the policy the key's page offers to
ask an admin (ApprovalRequest.kind LIMIT), the admin approves, the owner applies exactly that limit
once; lowering a key that has more than the policy allows is always possible."""

from __future__ import annotations

from decimal import Decimal

from django.core import mail

from keys.forms import new_nonce
from keys.models import ApprovalRequest
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, mint

REASON = "The nightly batch needs more this quarter."


def raise_to(client, key, amount):
    return client.post(f"/keys/{key.pk}/limit/", {"monthly_limit": amount}, **HTMX)


def ask(client, key, amount="250", reason=REASON):
    return client.post(f"/keys/{key.pk}/limit/approval/", {"monthly_limit": amount, "reason": reason}, **HTMX)


def approved_request(rclient, aclient, key, amount="250") -> ApprovalRequest:
    ask(rclient, key, amount)
    approval = ApprovalRequest.objects.get(kind="limit")
    assert aclient.post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"}).status_code == 302
    return ApprovalRequest.objects.get(pk=approval.pk)


def test_a_raise_beyond_the_policy_offers_an_approval_request(rclient, requester, standin):
    key = mint(rclient, requester, limit="40")
    html = raise_to(rclient, key, "250").content.decode()
    assert "Your policy allows at most $100.00 per key." in html and "Ask an admin for $250.00 a month" in html
    assert AuditEvent.objects.filter(action="key.limit_failed", outcome="denied").count() == 1
    assert "at least 10 characters" in ask(rclient, key, reason="short").content.decode()
    assert not ApprovalRequest.objects.exists()
    html = ask(rclient, key).content.decode()
    assert "You asked the portal admins for a monthly limit of $250.00" in html
    approval = ApprovalRequest.objects.get()
    assert (approval.kind, approval.key, approval.monthly_limit) == ("limit", key, Decimal("250"))
    assert AuditEvent.objects.filter(action="approval.requested").count() == 1
    assert standin.keys[key.api_key_id]["monthly_limit"] == 40


def test_the_admin_approves_and_the_owner_applies_it_once(rclient, aclient, requester, standin):
    key = mint(rclient, requester, limit="40")
    approval = approved_request(rclient, aclient, key)
    assert f"/keys/{key.pk}/" in mail.outbox[-1].body and "Apply it on the key's page" in mail.outbox[-1].body
    assert "Apply it on the key's page" in rclient.get("/keys/").content.decode()
    page = rclient.get(f"/keys/{key.pk}/").content.decode()
    assert "Apply the approved $250.00 limit" in page
    html = rclient.post(f"/keys/{key.pk}/limit/", {"approval": approval.pk}, **HTMX).content.decode()
    assert "The monthly limit is now $250" in html
    assert standin.keys[key.api_key_id]["monthly_limit"] == 250
    assert ApprovalRequest.objects.get().status == "used"
    assert AuditEvent.objects.filter(action="approval.used").count() == 1
    again = rclient.post(f"/keys/{key.pk}/limit/", {"approval": approval.pk}, **HTMX).content.decode()
    assert "not valid any more" in again


def test_a_definite_failure_gives_the_approval_back(rclient, aclient, requester, standin):
    key = mint(rclient, requester, limit="40")
    approval = approved_request(rclient, aclient, key)
    standin.inject(Fault.status(400), method="POST", path=f"/v1/manage/apikey/{key.api_key_id}/limit")
    rclient.post(f"/keys/{key.pk}/limit/", {"approval": approval.pk}, **HTMX)
    assert ApprovalRequest.objects.get().status == "approved"
    assert standin.keys[key.api_key_id]["monthly_limit"] == 40


def test_a_limit_approval_cannot_mint_a_key_nor_serve_someone_else(rclient, r2client, aclient, requester, standin):
    key = mint(rclient, requester, limit="40")
    approval = approved_request(rclient, aclient, key)
    data = {"name": key.name, "monthly_limit": "250", "manage": "none", "completions": "write"}
    response = rclient.post("/keys/new/", {**data, "nonce": new_nonce(requester), "approval": approval.pk}, **HTMX)
    assert response.status_code == 403 and "not valid any more" in response.content.decode()
    assert "cannot be used" in rclient.get(f"/keys/new/?approval={approval.pk}").content.decode()
    assert r2client.post(f"/keys/{key.pk}/limit/", {"approval": approval.pk}, **HTMX).status_code == 404
    assert r2client.post(f"/keys/{key.pk}/limit/approval/", {"monthly_limit": "9", "reason": REASON}).status_code == 404
    assert ApprovalRequest.objects.get().status == "approved"
    new_key = ApprovalRequest.objects.create(
        requester=requester,
        name="other",
        monthly_limit=Decimal("250"),
        manage="none",
        completions="write",
        reason=REASON,
        status="approved",
        expires_at=approval.expires_at,
    )  # an approval of a new key cannot raise a limit
    assert rclient.post(f"/keys/{key.pk}/limit/", {"approval": new_key.pk}, **HTMX).status_code == 400
    assert standin.keys[key.api_key_id]["monthly_limit"] == 40


def test_a_key_above_the_policy_can_always_be_lowered(rclient, aclient, requester, standin):
    key = mint(rclient, requester, limit="40")
    approval = approved_request(rclient, aclient, key, amount="250")
    rclient.post(f"/keys/{key.pk}/limit/", {"approval": approval.pk}, **HTMX)
    page = rclient.get(f"/keys/{key.pk}/").content.decode()
    assert "this key has more by an admin's approval, and you can lower it" in page
    assert "The monthly limit is now $180" in raise_to(rclient, key, "180").content.decode()
    assert standin.keys[key.api_key_id]["monthly_limit"] == 180
