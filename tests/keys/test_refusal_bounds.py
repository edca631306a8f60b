"""Audit amplification beyond the mint form (invariant I7, docs/security.md "Bounded audit of
refusals"): refused limit changes and approval requests share the per-person refusal bound with
refused mints; accepted limit changes are rate-limited; pending approval requests are capped, their
reasons bounded, and /approvals/ is paginated."""

from __future__ import annotations

import re

from keys.models import REASON_MAX_LENGTH, ApprovalRequest
from portal.audit.models import AuditEvent
from tests.keys.helpers import HTMX, alert_text, alerts, creates, mint, post_mint

BIG = {"name": "big-batch", "monthly_limit": "250", "manage": "none", "completions": "write"}


def ask(client, reason="Nightly batch jobs need a higher cap.", **values):
    return client.post("/approvals/request/", {**BIG, **values, "reason": reason}, **HTMX)


def limit_calls(standin) -> list:
    return [c for c in standin.calls if c.path.endswith("/limit")]


def test_refused_limit_changes_count_towards_the_bound_then_everything_is_refused_unexamined(
    rkey, rclient, requester, standin, settings, caplog
):
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 3
    for _ in range(3):  # over the per-key cap: refused, and each one audited
        response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "5000"}, **HTMX)
        assert response.status_code == 200 and "at most" in alert_text(response)
    refused = AuditEvent.objects.filter(action="key.limit_failed", outcome="denied")
    assert refused.count() == 3
    for _ in range(2):
        response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "5000"}, **HTMX)
        assert response.status_code == 429 and 3500 < int(response["Retry-After"]) <= 3601
        assert "not taking more from you for now" in alert_text(response)
    # The same bound covers the other forms: nothing examined, nothing created or asked.
    assert post_mint(rclient, requester, manage="write").status_code == 429
    assert ask(rclient, manage="write").status_code == 429
    assert refused.count() == 3 and not ApprovalRequest.objects.exists()
    assert AuditEvent.objects.filter(action__in=["mint.denied", "approval.refused"]).count() == 0
    (note,) = AuditEvent.objects.filter(action="mint.rate_limited")
    assert note.detail.startswith("[bound reached]") and "limit and approval requests" in note.detail
    assert limit_calls(standin) == [] and len(creates(standin)) == 1  # the key of the fixture
    assert sum("Request refused unexamined" in r.getMessage() for r in caplog.records) == 4


def test_refused_approval_requests_count_towards_the_bound(rclient, requester, standin, settings):
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 2
    for forged in ({"manage": "write"}, {"completions": "admin"}):
        response = ask(rclient, **forged)
        assert response.status_code == 200 and "does not offer" in " ".join(alerts(response))
    assert AuditEvent.objects.filter(action="approval.refused").count() == 2
    response = post_mint(rclient, requester, monthly_limit="5000")
    assert response.status_code == 429 and "not taking more" in response.content.decode()
    assert AuditEvent.objects.filter(action="mint.denied").count() == 0


def test_accepted_limit_changes_are_rate_limited(rkey, rclient, standin, settings):
    """Each change is two audit events and a Requesty call: at most PORTAL_LIMIT_CHANGES_PER_HOUR."""
    settings.PORTAL_LIMIT_CHANGES_PER_HOUR = 2
    for amount in ("30", "35"):
        assert "now $" in rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": amount}, **HTMX).content.decode()
    response = rclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": "40"}, **HTMX)
    assert response.status_code == 429 and "changed limits 2 times in the last hour" in alert_text(response)
    assert len(limit_calls(standin)) == 2
    rkey.refresh_from_db()
    assert rkey.monthly_limit == 35 and rkey.pending_limit is None
    event = AuditEvent.objects.filter(action="key.limit_failed").get()
    assert event.outcome == "denied" and "changed limits 2 times" in event.detail


def test_portal_admins_are_not_rate_limited_on_limit_changes(rkey, aclient, standin, settings):
    settings.PORTAL_LIMIT_CHANGES_PER_HOUR = 1
    for amount in ("30", "35", "40"):
        assert "now $" in aclient.post(f"/keys/{rkey.pk}/limit/", {"monthly_limit": amount}, **HTMX).content.decode()
    assert len(limit_calls(standin)) == 3


def test_pending_approval_requests_are_capped_per_person(rclient, requester, settings, r2client):
    settings.PORTAL_MAX_PENDING_APPROVALS = 2
    for _ in range(2):
        assert "sent to the portal admins" in ask(rclient).content.decode()
    response = ask(rclient)
    assert "already have 2 requests waiting" in " ".join(alerts(response))
    assert ApprovalRequest.objects.filter(requester=requester).count() == 2
    event = AuditEvent.objects.get(action="approval.refused")
    assert event.outcome == "denied" and event.actor_id == requester.pk and "waiting" in event.detail
    asked = (event.key_name, event.monthly_limit, event.manage, event.completions)
    assert asked == ("big-batch", 250, "none", "write")  # what the refused request asked for
    assert "sent to the portal admins" in ask(r2client).content.decode()  # everyone has their own cap
    ApprovalRequest.objects.filter(requester=requester).update(status=ApprovalRequest.Status.DENIED)
    assert "sent to the portal admins" in ask(rclient).content.decode()  # decided ones do not count


def test_reasons_are_bounded(rclient):
    response = ask(rclient, reason="x" * (REASON_MAX_LENGTH + 1))
    assert f"at most {REASON_MAX_LENGTH} characters" in response.content.decode()
    assert f'maxlength="{REASON_MAX_LENGTH}"' in response.content.decode()
    assert not ApprovalRequest.objects.exists()
    assert "sent to the portal admins" in ask(rclient, reason="y" * REASON_MAX_LENGTH).content.decode()


def test_the_approvals_page_is_paginated(aclient, requester):
    ApprovalRequest.objects.bulk_create(
        ApprovalRequest(requester=requester, name=f"req-{i:02}", monthly_limit=250, reason="because of a reason")
        for i in range(25)
    )
    first = aclient.get("/approvals/").content.decode()
    second = aclient.get("/approvals/", {"page": "2"}).content.decode()
    names = lambda html: set(re.findall(r"“(req-\d\d)” for", html))  # noqa: E731
    assert len(names(first)) == 20 and len(names(second)) == 5 and not names(first) & names(second)
    assert "Page 1 of 2" in first and 'href="?page=2"' in first and 'href="?page=1"' in second
    for odd in ("0", "-1", "x", "²", "9" * 30, "3"):  # never a 500; out of range shows a real page
        response = aclient.get("/approvals/", {"page": odd})
        assert response.status_code == 200 and "Page " in response.content.decode()


# --- Forged values are refused and audited, with what was asked for ------------------------------
def test_a_forged_completions_level_on_the_mint_form_is_audited(rclient, requester, standin):
    response = post_mint(rclient, requester, completions="admin")
    assert response.status_code == 403 and "Choose one of" in response.content.decode()
    event = AuditEvent.objects.get(action="mint.denied")
    assert event.completions == "admin" and event.outcome == "denied" and "completions" in event.detail
    assert creates(standin) == []


def test_an_over_cap_mint_denial_records_the_amount_asked_for(rclient, requester, standin):
    assert post_mint(rclient, requester, monthly_limit="5000").status_code == 403
    event = AuditEvent.objects.get(action="mint.denied")
    assert event.monthly_limit == 5000 and "at most" in event.detail


def test_forged_values_on_approval_requests_are_audited(rclient, requester, standin):
    for forged in ({"manage": "write"}, {"completions": "admin"}, {"manage": "WRITE", "completions": "x"}):
        ask(rclient, **forged)
    events = list(AuditEvent.objects.filter(action="approval.refused").order_by("seq"))
    assert [(e.manage, e.completions) for e in events] == [("write", "write"), ("none", "admin"), ("WRITE", "x")]
    assert all(e.outcome == "denied" and e.actor_id == requester.pk and e.monthly_limit == 250 for e in events)
    assert not ApprovalRequest.objects.exists() and standin.calls == []


def test_deciding_ones_own_request_counts_towards_the_bound(admin_user, settings):
    from django.test import Client

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 2
    own = ApprovalRequest.objects.create(requester=admin_user, name="mine", monthly_limit=250, reason="a reason")
    client = Client()
    client.force_login(admin_user)
    for _ in range(2):
        assert client.post(f"/approvals/{own.pk}/decide/", {"decision": "approve"}).status_code == 403
    response = client.post(f"/approvals/{own.pk}/decide/", {"decision": "approve"})
    assert response.status_code == 429 and "not taking more from you" in response.content.decode()
    assert AuditEvent.objects.filter(action="approval.refused").count() == 2
    assert ApprovalRequest.objects.get(pk=own.pk).status == "pending"


def test_the_pending_cap_covers_requests_about_existing_keys(rclient, requester, settings, standin):
    """A higher limit and a later expiry for an existing key wait in the same queue, under the same
    cap, as requests for new keys: neither can be used to flood /approvals/."""
    settings.PORTAL_MAX_PENDING_APPROVALS = 1
    key = mint(rclient, requester, name="existing")
    reason = "The nightly batch needs more this quarter."
    asked = rclient.post(f"/keys/{key.pk}/limit/approval/", {"monthly_limit": "250", "reason": reason}, **HTMX)
    assert "already have" not in asked.content.decode() and ApprovalRequest.objects.count() == 1
    more = rclient.post(f"/keys/{key.pk}/limit/approval/", {"monthly_limit": "300", "reason": reason}, **HTMX)
    assert "already have 1 requests waiting" in " ".join(alerts(more))
    later = {"expires": "date", "expires_on": "2099-01-01", "reason": reason}
    refused = rclient.post(f"/keys/{key.pk}/extend/request/", later, **HTMX)
    assert "already have 1 requests waiting" in " ".join(alerts(refused))
    assert ApprovalRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="approval.refused", actor_id=requester.pk).count() == 2
    for answer in (more, refused):  # reasons bounded as for new keys
        assert f'maxlength="{REASON_MAX_LENGTH}"' in answer.content.decode()


def test_refused_extensions_count_towards_the_bound_then_are_refused_unexamined(rkey, rclient, settings, standin):
    """Asking for an expiry beyond the policy is a refusal a person can cause at will: bounded like
    the others. An approval id that is not plain digits ("²") changes nothing and is no error."""
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 2
    beyond = {"expires": "date", "expires_on": "2099-01-01"}
    for _ in range(2):
        response = rclient.post(f"/keys/{rkey.pk}/extend/", beyond, **HTMX)
        assert response.status_code < 500 and "at most" in " ".join(alerts(response))
    refused = AuditEvent.objects.filter(action="key.expiry_failed", outcome="denied")
    assert refused.count() == 2
    response = rclient.post(f"/keys/{rkey.pk}/extend/", beyond, **HTMX)
    assert response.status_code == 429 and "not taking more from you for now" in " ".join(alerts(response))
    asked = {**beyond, "reason": "The project runs until then."}
    assert rclient.post(f"/keys/{rkey.pk}/extend/request/", asked, **HTMX).status_code == 429
    assert refused.count() == 2 and not ApprovalRequest.objects.exists()
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 60
    odd = rclient.post(f"/keys/{rkey.pk}/extend/", {"approval": "²"}, **HTMX)
    assert odd.status_code < 500 and "cannot be used" in " ".join(alerts(odd))
