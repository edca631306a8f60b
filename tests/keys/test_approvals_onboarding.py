"""Approval requests and onboarding links (issue 5)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.utils import timezone

from keys.forms import new_nonce
from keys.models import ApprovalRequest, IssuedKey, OnboardingTemplate
from portal.audit.models import AuditEvent
from standin import Fault

HTMX = {"HTTP_HX_REQUEST": "true"}
BIG = {"name": "big-batch", "monthly_limit": "250", "manage": "none", "completions": "write"}


def ask(client, reason="Nightly batch jobs need a higher cap.", **values):
    return client.post("/approvals/request/", {**BIG, **values, "reason": reason}, **HTMX)


def mint_with(client, user, approval, **values):
    data = {**BIG, **values, "nonce": new_nonce(user), "approval": approval.pk}
    return client.post("/keys/new/", data, **HTMX)


@pytest.fixture
def admin2(db) -> User:
    from django.contrib.auth.models import Group

    user = User.objects.create_user("bea", "bea@example.com", "pw-bea")
    user.groups.add(Group.objects.get(name="Portal admins"))
    return User.objects.get(pk=user.pk)


def decide(client, approval, decision="approve", comment="ok for Q4"):
    return client.post(f"/approvals/{approval.pk}/decide/", {"decision": decision, "comment": comment})


# --- Asking ---------------------------------------------------------------------------------------
def test_over_policy_form_leads_to_an_approval_request(rclient, requester, standin):
    refused = rclient.post("/keys/new/", {**BIG, "nonce": new_nonce(requester)}, **HTMX)
    html = refused.content.decode()
    assert refused.status_code == 403 and "Request approval" in html and 'name="reason"' in html
    assert 'value="250"' in html  # the values asked for travel with the offer
    response = ask(rclient)
    assert "sent to the portal admins" in response.content.decode()
    approval = ApprovalRequest.objects.get()
    assert (approval.requester, approval.monthly_limit, approval.status) == (requester, Decimal("250"), "pending")
    assert AuditEvent.objects.filter(action="approval.requested").count() == 1
    assert standin.calls == []


def test_reason_is_required(rclient):
    response = ask(rclient, reason="  ")
    assert "at least 10 characters" in " ".join(re.findall(r'role="alert"[^>]*>([^<]*)', response.content.decode()))
    assert not ApprovalRequest.objects.exists()


def test_no_approval_for_values_within_policy(rclient):
    response = ask(rclient, monthly_limit="5")
    assert "within your policy" in response.content.decode() and not ApprovalRequest.objects.exists()


def test_approval_values_are_validated_like_the_form(rclient):
    for bad in ({"monthly_limit": "1e9"}, {"manage": "WRITE"}, {"name": "x\u202ey"}):
        ask(rclient, **bad)
    assert not ApprovalRequest.objects.exists()


# --- Deciding -------------------------------------------------------------------------------------
def test_admins_see_pending_requests_with_a_count(rclient, aclient):
    ask(rclient)
    assert 'Approvals <span class="badge">1' in aclient.get("/").content.decode()
    html = aclient.get("/approvals/").content.decode()
    assert "big-batch" in html and "Nightly batch jobs" in html


def test_only_admins_may_see_or_decide(rclient, r2client_factory):
    ask(rclient)
    approval = ApprovalRequest.objects.get()
    other = r2client_factory()
    assert other.get("/approvals/").status_code == 403
    assert decide(other, approval).status_code == 403
    assert ApprovalRequest.objects.get().status == "pending"


def test_approve_mails_the_requester_without_any_secret(rclient, aclient, requester, standin, canary):
    ask(rclient)
    approval = ApprovalRequest.objects.get()
    assert decide(aclient, approval).status_code == 302
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by.username == "ada"
    assert timedelta(days=6, hours=23) < approval.expires_at - timezone.now() <= timedelta(days=7)
    (message,) = mail.outbox
    assert message.to == ["rita@example.com"] and "approved" in message.subject
    assert f"/keys/new/?approval={approval.pk}" in message.body and "ok for Q4" in message.body
    assert standin.calls == []  # approving mints nothing
    # The requester mints exactly the approved values, once, and sees the secret as usual.
    page = rclient.get(f"/keys/new/?approval={approval.pk}").content.decode()
    assert "Approved by ada" in page and 'value="250.00"' in page
    minted = mint_with(rclient, requester, approval)
    assert canary in minted.content.decode()
    assert canary not in "".join(m.message().as_string() for m in mail.outbox)
    approval.refresh_from_db()
    assert approval.status == "used" and approval.issuance.issued_key.monthly_limit == Decimal("250")
    assert AuditEvent.objects.filter(action="approval.used").count() == 1
    assert mint_with(rclient, requester, approval).status_code == 403  # one-time
    assert IssuedKey.objects.count() == 1


def test_deny_mails_and_shows_on_my_keys(rclient, aclient):
    ask(rclient)
    approval = ApprovalRequest.objects.get()
    decide(aclient, approval, "deny", "use the shared batch key")
    assert ApprovalRequest.objects.get().status == "denied"
    assert "denied" in mail.outbox[0].subject and "use the shared batch key" in mail.outbox[0].body
    html = rclient.get("/keys/").content.decode()
    assert "big-batch" in html and "denied" in html and "use the shared batch key" in html


def test_an_admin_cannot_approve_their_own_request(admin_user, admin2):
    approval = ApprovalRequest.objects.create(requester=admin_user, reason="x" * 12, **{**BIG, "monthly_limit": 250})
    client = Client()
    client.force_login(admin_user)
    assert decide(client, approval).status_code == 403
    assert ApprovalRequest.objects.get().status == "pending"
    assert AuditEvent.objects.get(action="approval.refused").actor_username == "ada"
    other = Client()
    other.force_login(admin2)
    assert decide(other, approval).status_code == 302


def test_a_decided_request_cannot_be_decided_again(rclient, aclient):
    ask(rclient)
    approval = ApprovalRequest.objects.get()
    decide(aclient, approval, "deny")
    assert decide(aclient, approval, "approve").status_code == 409
    assert ApprovalRequest.objects.get().status == "denied"


def test_expired_or_mismatched_approvals_cannot_be_used(rclient, aclient, requester, standin):
    ask(rclient)
    approval = ApprovalRequest.objects.get()
    decide(aclient, approval)
    assert mint_with(rclient, requester, approval, monthly_limit="251").status_code == 403  # not the approved values
    ApprovalRequest.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert mint_with(rclient, requester, approval).status_code == 403
    assert "cannot be used" in rclient.get(f"/keys/new/?approval={approval.pk}").content.decode()
    assert standin.calls_to("POST", "/v1/manage/apikey") == []


def test_someone_elses_approval_is_useless(rclient, aclient, requester2, standin, r2client_factory):
    ask(rclient)
    approval = ApprovalRequest.objects.get()
    decide(aclient, approval)
    assert mint_with(r2client_factory(), requester2, approval).status_code == 403
    assert standin.calls == []


def test_a_definite_no_from_requesty_gives_the_approval_back(rclient, aclient, requester, standin):
    ask(rclient)
    approval = ApprovalRequest.objects.get()
    decide(aclient, approval)
    standin.inject(Fault.status(400), method="POST", path="/v1/manage/apikey")
    mint_with(rclient, requester, approval)
    assert ApprovalRequest.objects.get().status == "approved"
    assert mint_with(rclient, requester, approval).status_code == 200


@pytest.fixture
def r2client_factory(requester2):
    def make():
        client = Client()
        client.force_login(requester2)
        return client

    return make


# --- Onboarding templates -------------------------------------------------------------------------
@pytest.fixture
def template(db) -> OnboardingTemplate:
    return OnboardingTemplate.objects.create(
        slug="data-team",
        name_pattern="{username}-dev",
        monthly_limit=Decimal("30"),
        completions="read",
        return_url="https://wiki.example.com/onboarding/step-3",
        description="Data team starter key",
    )


def test_template_prefills_the_form(rclient, template, standin):
    html = rclient.get("/keys/new/?template=data-team").content.decode()
    assert 'value="rita-dev"' in html and 'value="30.00"' in html
    assert re.search(r'<option value="read" selected>', html)
    assert 'name="template" value="data-team"' in html
    assert standin.calls == []


def test_template_beyond_policy_is_clamped_and_offers_approval(rclient, template):
    template.monthly_limit = Decimal("400")
    template.save()
    html = rclient.get("/keys/new/?template=data-team").content.decode()
    assert 'id="id_monthly_limit" name="monthly_limit" value="100' in html  # clamped to the cap
    assert "Request approval" in html and 'name="monthly_limit" value="400' in html


def test_unknown_template_slug(rclient, db):
    html = rclient.get("/keys/new/?template=nope").content.decode()
    assert "template that does not exist" in html and 'name="name" value=""' in html


def test_continue_onboarding_after_the_secret(rclient, requester, template, standin, settings):
    settings.ONBOARDING_RETURN_HOSTS = ["wiki.example.com"]
    data = {"name": "rita-dev", "monthly_limit": "30", "manage": "none", "completions": "read", "template": "data-team"}
    html = rclient.post("/keys/new/", {**data, "nonce": new_nonce(requester)}, **HTMX).content.decode()
    assert 'href="https://wiki.example.com/onboarding/step-3"' in html and "Continue onboarding" in html


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com/",
        "//evil.com",
        "/\\evil.com",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "http://wiki.example.com/",
        "https://wiki.example.com.evil.com/",
        "https://evil.com\\@wiki.example.com/",
        "https://user@wiki.example.com/",
        "https:wiki.example.com",
        "https://wiki.example.com%2F@evil.com/",
        " https://wiki.example.com/",
        "https://wiki.example.com:8443/",
    ],
)
def test_return_urls_outside_the_allow_list_are_ignored_and_audited(
    rclient, requester, template, standin, settings, url
):
    settings.ONBOARDING_RETURN_HOSTS = ["wiki.example.com"]
    OnboardingTemplate.objects.filter(pk=template.pk).update(return_url=url)
    data = {"name": "rita-dev", "monthly_limit": "30", "manage": "none", "completions": "read", "template": "data-team"}
    html = rclient.post("/keys/new/", {**data, "nonce": new_nonce(requester)}, **HTMX).content.decode()
    assert "Continue onboarding" not in html and "evil" not in html
    assert AuditEvent.objects.filter(action="onboarding.return_refused").count() == 1


def test_mixed_case_allowed_host_is_fine(settings):
    from keys.onboarding import safe_return_url

    settings.ONBOARDING_RETURN_HOSTS = ["Wiki.Example.com"]
    assert safe_return_url("https://WIKI.example.com/x") == "https://WIKI.example.com/x"


def test_onboarding_links_page(aclient, rclient, template):
    html = aclient.get("/onboarding/").content.decode()
    assert "http://testserver/keys/new/?template=data-team" in html and "Copy link" in html
    assert "<strong>Not used:</strong> its host is not in ONBOARDING_RETURN_HOSTS" in html  # empty in tests
    assert "<strong>Data team starter key</strong>" in html  # the description, not the slug, leads
    form = rclient.get("/keys/new/?template=data-team").content.decode()
    assert "the onboarding link “Data team starter key”" in form
    assert "Error:" not in html and "field-error" not in html
    assert rclient.get("/onboarding/").status_code == 403


def test_ad_hoc_links_keep_working_and_never_set_manage(rclient, db):
    html = rclient.get("/keys/new/?name=adhoc&monthly_limit=12&completions=read&manage=write").content.decode()
    assert 'value="adhoc"' in html and 'value="12"' in html and "cannot set the manage permission" in html
    select = html[html.index('id="id_manage"') : html.index("</select>", html.index('id="id_manage"'))]
    assert re.findall(r'value="(\w+)"', select) == ["none"]


def test_an_approval_asked_from_a_template_still_continues_onboarding(
    rclient, aclient, requester, template, standin, settings
):
    settings.ONBOARDING_RETURN_HOSTS = ["wiki.example.com"]
    OnboardingTemplate.objects.filter(pk=template.pk).update(monthly_limit=Decimal("400"))
    page = rclient.get("/keys/new/?template=data-team").content.decode()
    assert 'name="template" value="data-team"' in page.split('class="panel approval-offer"')[1]
    values = {
        "name": "rita-dev",
        "monthly_limit": "400",
        "manage": "none",
        "completions": "read",
        "template": "data-team",
    }
    rclient.post("/approvals/request/", {**values, "reason": "Onboarding the data team"}, **HTMX)
    approval = ApprovalRequest.objects.get()
    assert approval.onboarding_template == template
    decide(aclient, approval)
    form = rclient.get(f"/keys/new/?approval={approval.pk}").content.decode()
    assert 'name="template" value="data-team"' in form
    minted = mint_with(rclient, requester, approval, **values).content.decode()
    assert "Continue onboarding" in minted and 'href="https://wiki.example.com/onboarding/step-3"' in minted
