"""Who single sign-on makes (portal/accounts/provisioning.py): linking, refreshing, e-mail
domains, deactivated accounts, and provider groups mapped to portal groups."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from keys import policy
from portal.accounts import permissions
from portal.accounts.models import OIDCIdentity, SSOGroupGrant
from tests.accounts.helpers import alice, events, group_names, policy_group, sso_sign_in


def test_changed_email_and_name_update_the_same_user(client, oidc):
    sso_sign_in(client)
    user = alice()
    oidc.update("alice", email="alice.liddell@example.com", name="Alice Pleasance Liddell")
    response = sso_sign_in(Client())
    assert response.status_code == 302
    assert User.objects.count() == 1
    user.refresh_from_db()
    assert user.email == "alice.liddell@example.com"
    assert (user.first_name, user.last_name) == ("Alice", "Pleasance Liddell")


def test_existing_account_with_the_same_email_is_linked_when_opted_in_and_verified(client, oidc, requester, settings):
    settings.OIDC_LINK_EXISTING_BY_EMAIL = True
    oidc.update("alice", email=requester.email, email_verified=True)
    sso_sign_in(client)
    assert alice() == requester and User.objects.count() == 1
    assert "linked to the existing account" in events("auth.signed_in")[0].detail


def _refused_link(client, requester, reason: str) -> None:
    response = sso_sign_in(client)
    html = response.content.decode()
    assert response.status_code == 403 and 'role="alert"' in html
    assert "already exists but is not linked" in html and "Ask a portal admin" in html
    assert client.get("/").status_code == 302  # not signed in, as nobody
    assert not OIDCIdentity.objects.exists() and list(User.objects.all()) == [requester]
    (event,) = events("auth.sign_in_failed")
    assert event.outcome == "denied" and "not linked" in event.detail and "'rita'" in event.detail
    assert reason in event.detail


def test_linking_by_email_is_off_by_default(client, oidc, requester):
    """An identity asserting someone's e-mail (verified or not) does not take over their account."""
    oidc.update("alice", email=requester.email, email_verified=True)
    _refused_link(client, requester, "linking by e-mail is off")


@pytest.mark.parametrize("verified", ["omit", 0, 1, "true", "True"])
def test_linking_needs_email_verified_exactly_true(client, oidc, requester, settings, verified):
    """The "nOAuth" class: a missing, numeric or string claim vouches for nothing."""
    settings.OIDC_LINK_EXISTING_BY_EMAIL = True
    oidc.update("alice", email=requester.email, email_verified=verified)
    _refused_link(client, requester, "not true")


def test_linking_is_refused_when_several_accounts_have_the_email(client, oidc, requester, requester2, settings):
    settings.OIDC_LINK_EXISTING_BY_EMAIL = True
    User.objects.filter(pk=requester2.pk).update(email=requester.email.upper())
    oidc.update("alice", email=requester.email, email_verified=True)
    assert sso_sign_in(client).status_code == 403
    assert "several accounts" in events("auth.sign_in_failed")[0].detail
    assert not OIDCIdentity.objects.exists()


def test_superuser_with_the_same_email_is_never_linked(client, oidc, superuser):
    oidc.update("alice", email=superuser.email)
    sso_sign_in(client)
    user = alice()
    assert user != superuser and not user.is_superuser


def test_disallowed_email_domain_is_refused_and_audited(client, oidc):
    oidc.update("alice", email="alice@evil.example")
    response = sso_sign_in(client)
    html = response.content.decode()
    assert response.status_code == 403 and 'role="alert"' in html
    assert "Accounts at evil.example may not use this portal" in html
    assert not User.objects.exists() and not OIDCIdentity.objects.exists()
    assert client.get("/").status_code == 302  # not signed in
    (event,) = events("auth.sign_in_failed")
    assert event.outcome == "denied" and event.actor_username == "anonymous"
    assert "wrong domain" in event.detail and "alice@evil.example" in event.detail


def test_unverified_email_is_refused(client, oidc):
    oidc.update("alice", email_verified=False)
    assert sso_sign_in(client).status_code == 403
    assert "not verified" in events("auth.sign_in_failed")[0].detail


def test_deactivated_user_is_refused(client, oidc):
    sso_sign_in(client)
    User.objects.filter(pk=alice().pk).update(is_active=False)
    assert client.get("/").status_code == 302  # the SSO session ends at once
    response = sso_sign_in(Client())
    assert response.status_code == 403 and "deactivated" in response.content.decode()
    assert "is deactivated" in events("auth.sign_in_failed")[0].detail


def test_group_claims_map_to_admin_and_policy_groups(client, oidc):
    policy_group("data-team")
    Group.objects.create(name="no-policy")  # not a policy group: a claim never puts anyone in it
    oidc.update("alice", groups=["portal-admins", "data-team", "no-policy", "unknown"])
    sso_sign_in(client)
    user = alice()
    assert group_names(user) == {"Portal admins", "data-team"}
    assert permissions.is_portal_admin(User.objects.get(pk=user.pk))
    assert client.get("/audit/").status_code == 200  # the group carries audit.view_audit_log
    assert set(SSOGroupGrant.objects.filter(user=user).values_list("group__name", flat=True)) == {
        "Portal admins",
        "data-team",
    }
    assert "groups +Portal admins +data-team" in events("auth.signed_in")[0].detail


def test_policy_group_claim_sets_the_spending_policy(client, oidc):
    policy_group("data-team")
    oidc.update("alice", groups=["data-team"])
    sso_sign_in(client)
    assert policy.resolve(alice()).max_key_limit == Decimal("50")
    assert not permissions.is_portal_admin(alice())


def test_removal_at_the_provider_takes_effect_at_next_sign_in(client, oidc):
    data, ops, ml = policy_group("data-team"), policy_group("ops-team"), policy_group("ml-team")
    oidc.update("alice", groups=["portal-admins", "data-team", "ml-team"])
    sso_sign_in(client)
    user = alice()
    ml_grant = SSOGroupGrant.objects.get(user=user, group=ml)
    # An admin grants two memberships by hand: one the provider does not know, one it also claims.
    user.groups.add(ops)
    ml_grant.delete()  # ml-team now counts as granted by hand (as if added before SSO was on)
    oidc.update("alice", groups=[])
    client = Client()
    assert sso_sign_in(client).status_code == 302
    user = User.objects.get(pk=user.pk)
    assert group_names(user) == {"ops-team", "ml-team"}
    assert not permissions.is_portal_admin(user)
    assert client.get("/audit/").status_code == 403
    assert not SSOGroupGrant.objects.filter(user=user).exists()
    assert "groups -Portal admins -data-team" in events("auth.signed_in")[-1].detail
    assert data.pk  # the group itself stays
