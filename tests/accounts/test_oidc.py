"""Single sign-on (keys/sso.py) against a real OpenID Connect provider in a Node process.

The provider (`oidc-provider`, tests/accounts/oidc_provider/) is started once per session; its accounts
file is rewritten per test. Flows go over real HTTP: the test plays the browser with `requests` at
the provider and Django's test client at the portal, and the portal calls the provider's discovery,
token, JWKS and userinfo endpoints itself. One browser test does the whole thing in Chromium.
"""

from __future__ import annotations

import sys
import threading
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.exceptions import SuspiciousOperation
from django.core.signals import got_request_exception
from django.test import Client
from django.views.debug import ExceptionReporter

from keys import policy
from keys.models import SpendingPolicy
from portal.accounts import permissions, sso
from portal.accounts.models import OIDCIdentity, SSOGroupGrant
from portal.audit.models import AuditEvent
from tests.accounts.oidc_idp import CLIENT_ID, CLIENT_SECRET, idp, path_of, provider_login  # noqa: F401

PORTAL = "http://testserver"
HTMX = {"HTTP_HX_REQUEST": "true"}
ALICE = {
    "password": "alice-idp-pw",
    "sub": "00u-alice-1",
    "email": "alice@example.com",
    "name": "Alice Liddell",
    "groups": [],
}


@pytest.fixture
def oidc(idp, settings, db):  # noqa: F811
    """SSO on, pointed at the test provider, with one account (alice) and a clean slate."""
    settings.OIDC_ISSUER = idp.issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    settings.OIDC_SCOPES = "openid email profile groups"
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    settings.OIDC_ADMIN_GROUPS = ["portal-admins"]
    settings.OIDC_ONLY = False
    settings.OIDC_BREAK_GLASS = True
    idp.set_accounts({"alice": dict(ALICE)})
    return idp


def start(client: Client, next_url: str = "", **params) -> str:
    """The portal's "Sign in with ..." link: returns the provider's authorize URL."""
    query = {"next": next_url, **params} if next_url else params
    response = client.get("/oidc/authenticate/", query)
    assert response.status_code == 302, response.content[:300]
    return response["Location"]


def sign_in(client: Client, login: str = "alice", password: str | None = None, next_url: str = "", **params):
    """A whole sign-in: the portal's redirect, the provider's login page, the portal's callback."""
    password = password or sso_password(login)
    back = provider_login(start(client, next_url, **params), login, password, PORTAL)
    return client.get(path_of(back))


def sso_password(login: str) -> str:
    return {"alice": ALICE["password"]}.get(login, f"{login}-idp-pw")


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def policy_group(name: str) -> Group:
    group = Group.objects.create(name=name)
    SpendingPolicy.objects.create(
        group=group, max_key_limit=Decimal("50"), max_total_limit=Decimal("200"), max_active_keys=5
    )
    return group


def alice() -> User:
    return User.objects.get(oidc_identities__subject=ALICE["sub"])


def group_names(user: User) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


# --- Without OIDC settings nothing changes --------------------------------------------------------
def test_without_settings_there_is_no_sso(client, db):
    html = client.get("/accounts/login/").content.decode()
    assert "Sign in with" not in html and ">Sign in</button>" in html
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


# --- Sign-in ---------------------------------------------------------------------------------------
def test_first_sign_in_creates_the_user(client, oidc):
    html = client.get("/accounts/login/?next=/keys/").content.decode()
    assert 'href="/oidc/authenticate/?next=%2Fkeys%2F"' in html and "Sign in with Test IdP" in html

    authorize = urlsplit(start(client, "/keys/"))
    params = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    assert f"{authorize.scheme}://{authorize.netloc}" == oidc.issuer
    assert params["response_type"] == "code" and params["client_id"] == CLIENT_ID
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) >= 43
    assert params["state"] and params["nonce"] and params["redirect_uri"] == f"{PORTAL}/oidc/callback/"
    assert "client_secret" not in authorize.query and CLIENT_SECRET not in authorize.query

    client = Client()
    response = sign_in(client, next_url="/keys/")
    assert response.status_code == 302 and response["Location"] == "/keys/"
    user = alice()
    assert (user.username, user.email, user.first_name, user.last_name) == (
        "alice@example.com",
        "alice@example.com",
        "Alice",
        "Liddell",
    )
    assert not user.has_usable_password()
    identity = OIDCIdentity.objects.get(user=user)
    assert (identity.issuer, identity.subject) == (oidc.issuer, ALICE["sub"])
    assert "Signed in as <strong>alice@example.com</strong>" in client.get("/").content.decode()
    (event,) = events("auth.signed_in")
    assert event.actor_username == "alice@example.com" and event.outcome == "success"
    assert "single sign-on via Test IdP" in event.detail and "account created" in event.detail
    assert event.source_ip == "127.0.0.1"


def test_changed_email_and_name_update_the_same_user(client, oidc):
    sign_in(client)
    user = alice()
    oidc.update("alice", email="alice.liddell@example.com", name="Alice Pleasance Liddell")
    response = sign_in(Client())
    assert response.status_code == 302
    assert User.objects.count() == 1
    user.refresh_from_db()
    assert user.email == "alice.liddell@example.com"
    assert (user.first_name, user.last_name) == ("Alice", "Pleasance Liddell")


def test_existing_account_with_the_same_email_is_linked(client, oidc, requester):
    oidc.update("alice", email=requester.email)
    sign_in(client)
    assert alice() == requester and User.objects.count() == 1
    assert "linked to the existing account" in events("auth.signed_in")[0].detail


def test_superuser_with_the_same_email_is_never_linked(client, oidc, superuser):
    oidc.update("alice", email=superuser.email)
    sign_in(client)
    user = alice()
    assert user != superuser and not user.is_superuser


def test_next_cannot_leave_the_portal(client, oidc):
    response = sign_in(client, next_url="//evil.example/")
    assert response.status_code == 302 and response["Location"] == "/"


# --- Groups ----------------------------------------------------------------------------------------
def test_group_claims_map_to_admin_and_policy_groups(client, oidc):
    policy_group("data-team")
    Group.objects.create(name="no-policy")  # not a policy group: a claim never puts anyone in it
    oidc.update("alice", groups=["portal-admins", "data-team", "no-policy", "unknown"])
    sign_in(client)
    user = alice()
    assert group_names(user) == {"Portal admins", "data-team"}
    assert permissions.is_portal_admin(User.objects.get(pk=user.pk))
    assert client.get("/audit/").status_code == 200  # the group carries keys.view_audit_log
    assert set(SSOGroupGrant.objects.filter(user=user).values_list("group__name", flat=True)) == {
        "Portal admins",
        "data-team",
    }
    assert "groups +Portal admins +data-team" in events("auth.signed_in")[0].detail


def test_policy_group_claim_sets_the_spending_policy(client, oidc):
    policy_group("data-team")
    oidc.update("alice", groups=["data-team"])
    sign_in(client)
    assert policy.resolve(alice()).max_key_limit == Decimal("50")
    assert not permissions.is_portal_admin(alice())


def test_removal_at_the_provider_takes_effect_at_next_sign_in(client, oidc):
    data, ops, ml = policy_group("data-team"), policy_group("ops-team"), policy_group("ml-team")
    oidc.update("alice", groups=["portal-admins", "data-team", "ml-team"])
    sign_in(client)
    user = alice()
    ml_grant = SSOGroupGrant.objects.get(user=user, group=ml)
    # An admin grants two memberships by hand: one the provider does not know, one it also claims.
    user.groups.add(ops)
    ml_grant.delete()  # ml-team now counts as granted by hand (as if added before SSO was on)
    oidc.update("alice", groups=[])
    client = Client()
    assert sign_in(client).status_code == 302
    user = User.objects.get(pk=user.pk)
    assert group_names(user) == {"ops-team", "ml-team"}
    assert not permissions.is_portal_admin(user)
    assert client.get("/audit/").status_code == 403
    assert not SSOGroupGrant.objects.filter(user=user).exists()
    assert "groups -Portal admins -data-team" in events("auth.signed_in")[-1].detail
    assert data.pk  # the group itself stays


# --- Refusals, all audited -------------------------------------------------------------------------
def test_disallowed_email_domain_is_refused_and_audited(client, oidc):
    oidc.update("alice", email="alice@evil.example")
    response = sign_in(client)
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
    assert sign_in(client).status_code == 403
    assert "not verified" in events("auth.sign_in_failed")[0].detail


def test_tampered_state_is_refused_and_audited(client, oidc):
    back = provider_login(start(client), "alice", ALICE["password"], PORTAL)
    parts = urlsplit(back)
    query = parse_qs(parts.query)
    forged = parts.query.replace(query["state"][0], "forged-" + query["state"][0][:10])
    response = client.get(f"{parts.path}?{forged}")
    assert response.status_code == 400 and 'role="alert"' in response.content.decode()
    assert client.get("/").status_code == 302
    (event,) = events("auth.sign_in_failed")
    assert "bad state" in event.detail and event.outcome == "denied"
    # The genuine answer still works once, and a replay of it is refused.
    assert client.get(path_of(back)).status_code == 302
    assert client.get("/").status_code == 200
    assert Client().get(path_of(back)).status_code == 400
    assert len(events("auth.sign_in_failed")) == 2


def test_callback_without_a_session_is_refused(oidc):
    back = provider_login(start(Client()), "alice", ALICE["password"], PORTAL)
    response = Client().get(path_of(back))  # another browser: the state is not in its session
    assert response.status_code == 400
    assert "bad state" in events("auth.sign_in_failed")[0].detail


def test_bad_states_are_audited_up_to_a_bound_per_address_and_hide_nothing_else(oidc, requester, settings):
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 2
    for n in range(4):
        assert Client().get(f"/oidc/callback/?state=forged-{n}&code=x").status_code == 400
    assert len(events("auth.sign_in_failed")) == 3  # the bound, and one saying it was reached
    # Another kind from the same address is counted on its own: a real account's failure.
    Client().post("/accounts/login/", {"username": "rita", "password": "guess"})
    assert len(events("auth.sign_in_failed")) == 4


def test_provider_error_is_refused_and_audited(client, oidc):
    state = parse_qs(urlsplit(start(client)).query)["state"][0]
    response = client.get("/oidc/callback/", {"error": "access_denied", "error_description": "no", "state": state})
    assert response.status_code == 403 and "did not sign you in (access_denied)" in response.content.decode()
    (event,) = events("auth.sign_in_failed")
    assert event.detail.startswith("[provider error] Test IdP: provider error: access_denied")
    # The state is spent; a forged error for an unknown state signs nobody out (no logout CSRF).
    assert client.get("/oidc/callback/", {"error": "access_denied", "state": state}).status_code == 400
    sign_in(client)
    assert client.get("/oidc/callback/", {"error": "login_required", "state": "forged"}).status_code == 400
    assert client.get("/").status_code == 200


def test_a_refused_code_is_refused_and_audited(client, oidc):
    back = provider_login(start(client), "alice", ALICE["password"], PORTAL)
    response = client.get(path_of(back).replace("code=", "code=x"))  # the provider refuses the code
    assert response.status_code == 400 and 'role="alert"' in response.content.decode()
    (event,) = events("auth.sign_in_failed")
    assert event.detail.startswith("[code refused] ") and "HTTP 400" in event.detail


def test_made_up_codes_are_junk_bounded_per_address(oidc, settings, mailoutbox):
    """A state is free from /oidc/authenticate/; a made-up code with it must not append without end
    (nor e-mail the admins each time)."""
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 2
    for _ in range(4):
        browser = Client()
        state = parse_qs(urlsplit(start(browser)).query)["state"][0]
        assert browser.get(f"/oidc/callback/?state={state}&code=made-up").status_code == 400
    assert len(events("auth.sign_in_failed")) == 3 and mailoutbox == []


def test_a_failing_token_endpoint_is_never_bounded(client, oidc, settings, monkeypatch):
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1

    def down(*args, **kwargs):
        raise requests.ConnectionError("provider down")

    monkeypatch.setattr(sso.OIDCBackend, "get_token", down)
    for _ in range(3):
        browser = Client()
        back = provider_login(start(browser), "alice", ALICE["password"], PORTAL)
        assert browser.get(path_of(back)).status_code == 502
    assert len(events("auth.sign_in_failed")) == 3
    assert all(
        e.detail.startswith("Test IdP: token exchange failed: ConnectionError") for e in events("auth.sign_in_failed")
    )


def test_deactivated_user_is_refused(client, oidc):
    sign_in(client)
    User.objects.filter(pk=alice().pk).update(is_active=False)
    assert client.get("/").status_code == 302  # the SSO session ends at once
    response = sign_in(Client())
    assert response.status_code == 403 and "deactivated" in response.content.decode()
    assert "is deactivated" in events("auth.sign_in_failed")[0].detail


def test_unreachable_provider_is_a_clear_error(client, oidc, settings):
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # nothing listens there: discovery fails
    assert client.get("/accounts/login/").status_code == 200  # the page itself needs no provider
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 503 and "cannot be reached" in response.content.decode()
    assert "provider unavailable" in events("auth.sign_in_failed")[0].detail


# --- Discovery, explicit endpoints, token checks ---------------------------------------------------
def test_explicit_endpoints_win_over_discovery(client, oidc, settings):
    settings.OIDC_AUTHORIZATION_ENDPOINT = "https://idp.example/explicit/authorize"
    assert start(client).startswith("https://idp.example/explicit/authorize?")


def test_explicit_endpoints_alone_sign_in(client, oidc, settings):
    document = sso.discovery()
    settings.OIDC_ISSUER = ""
    settings.OIDC_AUTHORIZATION_ENDPOINT = document["authorization_endpoint"]
    settings.OIDC_TOKEN_ENDPOINT = document["token_endpoint"]
    settings.OIDC_USERINFO_ENDPOINT = document["userinfo_endpoint"]
    settings.OIDC_JWKS_ENDPOINT = document["jwks_uri"]
    assert sign_in(client).status_code == 302
    assert OIDCIdentity.objects.get().issuer == oidc.issuer


def test_discovery_is_lazy_and_cached(oidc, settings, monkeypatch):
    from django.core.cache import cache

    cache.clear()
    calls = []
    fetch = sso._fetch_discovery
    monkeypatch.setattr(sso, "_fetch_discovery", lambda issuer: calls.append(issuer) or fetch(issuer))
    client = Client()
    client.get("/accounts/login/")
    assert calls == []  # rendering the sign-in page does not need the provider
    start(client)
    start(client)
    assert calls == [oidc.issuer]


def _token(key, **claims) -> str:
    now = int(time.time())
    payload = {"iss": sso.expected_issuer(), "sub": "s", "aud": CLIENT_ID, "iat": now, "exp": now + 60, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k"})


@pytest.mark.parametrize(
    "claims",
    [{"aud": "another-client"}, {"iss": "https://impostor.example"}, {"exp": int(time.time()) - 3600}],
    ids=["audience", "issuer", "expired"],
)
def test_id_token_audience_issuer_and_expiry_are_verified(oidc, claims):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    backend = sso.OIDCBackend()
    assert backend._verify_jws(_token(key), key.public_key())["sub"] == "s"
    with pytest.raises(SuspiciousOperation):
        backend._verify_jws(_token(key, **claims), key.public_key())
    with pytest.raises(SuspiciousOperation):  # signed by someone else
        backend._verify_jws(_token(key), rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    with pytest.raises(SuspiciousOperation):  # an HMAC token keyed with something public
        backend._verify_jws(jwt.encode({"sub": "s"}, "x" * 32, algorithm="HS256"), key.public_key())


@pytest.mark.parametrize(
    ("changes", "check_id"),
    [
        ({"OIDC_CLIENT_SECRET": ""}, "keys.W003"),
        ({"OIDC_ALLOWED_EMAIL_DOMAINS": []}, "keys.W004"),
        ({"OIDC_ISSUER": "http://idp.example"}, "keys.W005"),
        ({"OIDC_TIMEOUT": 10.0}, "keys.W006"),
    ],
)
def test_deploy_checks_catch_unsafe_sso_settings(oidc, settings, changes, check_id):
    from portal.accounts.checks import sso_settings

    settings.OIDC_ISSUER = "https://idp.example"
    assert sso_settings(None) == []
    for name, value in changes.items():
        setattr(settings, name, value)
    assert [problem.id for problem in sso_settings(None)] == [check_id]


def test_start_up_does_not_depend_on_the_provider():
    """Production settings with SSO pointed at an address where nothing answers: `check --deploy`
    passes, because discovery waits for the first sign-in."""
    from tests.test_deploy import PROD, manage

    env = {
        **PROD,
        "OIDC_ISSUER": "https://127.0.0.1:9/realms/staff",
        "OIDC_CLIENT_ID": "portal",
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_ALLOWED_EMAIL_DOMAINS": "example.com",
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert CLIENT_SECRET not in result.stdout + result.stderr
    # The CSP lets a form's redirects reach the provider (a stale mint posted without JavaScript).
    show = "from django.conf import settings; print(' '.join(settings.SECURE_CSP['form-action']))"
    result = manage("shell", "--no-imports", "-c", show, **env)
    assert result.stdout.split() == ["'self'", "https://127.0.0.1:9"], result.stdout + result.stderr


# --- OIDC_ONLY and break-glass ---------------------------------------------------------------------
def test_oidc_only_sends_the_sign_in_page_to_the_provider(client, oidc, settings):
    settings.OIDC_ONLY = True
    response = client.get("/keys/new/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/keys/new/"
    response = client.get(response["Location"])
    assert response.status_code == 302 and response["Location"] == "/oidc/authenticate/?next=%2Fkeys%2Fnew%2F"
    assert client.get(response["Location"])["Location"].startswith(oidc.issuer + "/auth?")
    html = client.get("/accounts/login/?break-glass=1").content.decode()
    assert 'name="password"' in html and "Break-glass sign-in" in html
    html = client.get("/accounts/login/?signed-out=1").content.decode()  # no bounce after sign-out
    assert "You are signed out" in html and "Sign in with Test IdP" in html and 'name="password"' not in html


def test_break_glass_password_works_for_superusers_only(oidc, superuser, requester, settings):
    client = Client()
    response = client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    html = response.content.decode()
    assert response.status_code == 200 and 'role="alert"' in html
    assert "only break-glass administrator accounts may use a password" in html
    assert client.get("/").status_code == 302
    failed = events("auth.sign_in_failed")[0]
    assert "'rita'" in failed.detail and "only superusers" in failed.detail

    response = client.post("/accounts/login/", {"username": "sam", "password": "pw-sam"})
    assert response.status_code == 302 and client.get("/").status_code == 200
    assert "break-glass" in events("auth.signed_in")[0].detail
    client.post("/accounts/logout/")
    assert events("auth.signed_out")[0].actor_username == "sam"

    settings.OIDC_BREAK_GLASS = False
    response = client.post("/accounts/login/", {"username": "sam", "password": "pw-sam"})
    assert response.status_code == 200 and client.get("/").status_code == 302
    assert 'name="password"' not in client.get("/accounts/login/").content.decode()


def test_the_password_throttle_leaves_single_sign_on_alone(client, oidc):
    from axes.models import AccessAttempt

    assert sign_in(client).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(5):  # alice's username, from this address: locked for passwords
        response = client.post("/accounts/login/", {"username": "alice@example.com", "password": "guess"})
    assert response.status_code == 429 and "Too many failed sign-in attempts" in response.content.decode()
    assert client.get("/oidc/callback/?code=x&state=forged").status_code == 400  # an SSO failure...
    assert AccessAttempt.objects.get().failures_since_start == 5  # ...is not counted
    response = sign_in(client, next_url="/keys/")
    assert response.status_code == 302 and response["Location"] == "/keys/"
    assert client.get("/").status_code == 200 and len(events("auth.signed_in")) == 2


def test_password_sign_in_and_out_are_audited_without_sso(client, requester):
    client.post("/accounts/login/", {"username": "rita", "password": "nope"})
    client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    client.post("/accounts/logout/")
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", "actor_username", "detail"))
    assert actions == [
        ("auth.sign_in_failed", "anonymous", "password sign-in failed for username 'rita'"),
        ("auth.signed_in", "rita", "password"),
        ("auth.signed_out", "rita", ""),
    ]


# --- A recent sign-in before minting ---------------------------------------------------------------
def _age_session(client: Client, seconds: int) -> None:
    session = client.session
    session[sso.SIGNED_IN_AT] = time.time() - seconds
    session.save()


def test_stale_sso_session_signs_in_again_before_minting(client, oidc, settings):
    settings.PORTAL_MINT_REAUTH_SECONDS = 3600
    sign_in(client)
    assert client.get("/keys/new/").status_code == 200
    _age_session(client, 3601)

    response = client.get("/keys/new/?name=laptop")
    assert response.status_code == 302
    assert response["Location"] == "/oidc/authenticate/?next=%2Fkeys%2Fnew%2F%3Fname%3Dlaptop&reauth=1"
    htmx = client.post("/keys/new/", {"name": "x"}, **HTMX)
    assert htmx.status_code == 200 and htmx["HX-Redirect"] == "/oidc/authenticate/?next=%2Fkeys%2Fnew%2F&reauth=1"
    assert "Location" not in htmx

    authorize = client.get(response["Location"])["Location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert params["prompt"] == "login" and params["max_age"] == "3600"
    assert params["login_hint"] == "alice@example.com"
    back = provider_login(authorize, "alice", ALICE["password"], PORTAL)
    response = client.get(path_of(back))
    assert response.status_code == 302 and response["Location"] == "/keys/new/?name=laptop"
    assert client.get("/keys/new/").status_code == 200
    assert len(events("auth.signed_in")) == 2


def test_reauth_needs_a_fresh_authentication_at_the_provider(client, oidc, monkeypatch):
    sign_in(client)
    _age_session(client, 13 * 3600)
    authorize = client.get(client.get("/keys/new/")["Location"])["Location"]
    back = provider_login(authorize, "alice", ALICE["password"], PORTAL)
    # The provider answers as if it had ignored prompt=login: its auth_time is a day old.
    real = sso.OIDCBackend._verify_jws
    monkeypatch.setattr(
        sso.OIDCBackend, "_verify_jws", lambda self, t, k: {**real(self, t, k), "auth_time": time.time() - 86400}
    )
    response = client.get(path_of(back))
    assert response.status_code == 403 and "did not confirm a fresh sign-in" in response.content.decode()
    assert "did not re-authenticate" in events("auth.sign_in_failed")[0].detail


def test_an_old_provider_session_makes_an_old_sign_in(client, oidc, monkeypatch, settings):
    """Signing in to the portal through a day-old provider session is a day-old sign-in: minting
    sends the person back to the provider, this time with max_age and the configured prompt."""
    real = sso.OIDCBackend._verify_jws
    monkeypatch.setattr(
        sso.OIDCBackend, "_verify_jws", lambda self, t, k: {**real(self, t, k), "auth_time": int(time.time()) - 86400}
    )
    assert sign_in(client).status_code == 302
    assert client.get("/").status_code == 200
    settings.OIDC_REAUTH_PROMPT = ""
    response = client.get("/keys/new/")
    assert response.status_code == 302 and "reauth=1" in response["Location"]
    params = parse_qs(urlsplit(client.get(response["Location"])["Location"]).query)
    assert params["max_age"] == ["43200"] and "prompt" not in params


def test_stale_password_session_goes_to_the_password_form(rclient, requester):
    _age_session(rclient, 13 * 3600)
    response = rclient.get("/keys/new/")
    assert response["Location"] == "/accounts/login/?next=%2Fkeys%2Fnew%2F&reauth=1"
    page = rclient.get(response["Location"])  # signed in, yet the form is shown, not skipped
    html = page.content.decode()
    assert page.status_code == 200 and "needs a recent sign-in" in html
    assert 'action="/accounts/login/?reauth=1"' in html
    response = rclient.post(
        "/accounts/login/?reauth=1", {"username": "rita", "password": "pw-rita", "next": "/keys/new/"}
    )
    assert response["Location"] == "/keys/new/"
    assert rclient.get("/keys/new/").status_code == 200


# --- The client secret stays secret ----------------------------------------------------------------
def test_client_secret_never_appears_in_responses_or_logs(client, oidc, debug_logs, settings):
    responses = [client.get("/accounts/login/"), sign_in(client), client.get("/"), client.get("/keys/new/")]
    back = provider_login(start(Client()), "alice", ALICE["password"], PORTAL)
    responses.append(client.get(path_of(back).replace("code=", "code=x")))  # a failed token exchange
    for response in responses:
        assert CLIENT_SECRET not in response.content.decode()
        assert CLIENT_SECRET not in str(response.headers)
    assert CLIENT_SECRET not in debug_logs.text
    assert "urllib3" in {record.name.split(".")[0] for record in debug_logs.records}  # the calls were logged
    assert CLIENT_SECRET not in oidc.log()


@pytest.mark.parametrize("basic_auth", [True, False], ids=["client_secret_basic", "client_secret_post"])
def test_client_secret_is_hidden_from_error_reports(oidc, debug_logs, monkeypatch, settings, basic_auth):
    """An unexpected error after the token exchange: the report (e-mail, and the full HTML report
    with every frame's local variables, as DEBUG or an error tracker would show) hides the secret
    that the library's token request held in its locals."""
    settings.DEBUG = False
    monkeypatch.setitem(sso._DERIVED, "OIDC_TOKEN_USE_BASIC_AUTH", lambda: basic_auth)
    reports = []

    def report(sender, request, **kwargs):
        reports.append(ExceptionReporter(request, *sys.exc_info(), is_email=True).get_traceback_html())

    def broken(self, access_token, id_token, payload):
        raise RuntimeError("userinfo exploded")

    monkeypatch.setattr(sso.OIDCBackend, "get_userinfo", broken)
    got_request_exception.connect(report)
    try:
        client = Client(raise_request_exception=False)
        back = provider_login(start(client), "alice", ALICE["password"], PORTAL)
        response = client.get(path_of(back))
    finally:
        got_request_exception.disconnect(report)
    assert response.status_code == 500
    assert mail.outbox and "userinfo exploded" in mail.outbox[0].body  # the report was sent
    assert reports and "token_payload" in reports[0]  # the frames and the names of their locals
    for text in [*reports, *(message.body for message in mail.outbox)]:
        assert CLIENT_SECRET not in text
    assert CLIENT_SECRET not in debug_logs.text and CLIENT_SECRET not in response.content.decode()


# --- In the browser ----------------------------------------------------------------------------------
@pytest.mark.browser
def test_browser_sign_in_with_the_provider_and_mint(oidc, live_server, standin, canary, settings):
    """Sign in with ... → the provider's login page → back in the portal, signed in, mint a key.
    Then the sign-in grows too old, and a mint posted without JavaScript goes through the
    provider's login page again (under the CSP, whose form-action allows the provider) and back.

    Playwright runs in a thread of its own: tests/test_browser.py keeps a session-wide Playwright
    open in the main thread, and its sync API allows one per thread."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

    settings.SECURE_CSP = {**settings.SECURE_CSP, "form-action": [*settings.SECURE_CSP["form-action"], oidc.issuer]}
    outcome: dict = {}
    signed_in, aged = threading.Event(), threading.Event()

    def provider_sign_in(page) -> None:
        page.wait_for_url(oidc.issuer + "/**")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(ALICE["password"])
        page.get_by_role("button", name="Continue").click()

    def drive() -> None:
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(base_url=live_server.url)
                    page.set_default_timeout(TIMEOUT_MS)
                    page.goto("/keys/new/")
                    page.get_by_role("link", name="Sign in with Test IdP").click()
                    provider_sign_in(page)
                    page.wait_for_url(live_server.url + "/keys/new/")
                    expect(page.get_by_text("Signed in as alice@example.com")).to_be_visible()
                    page.get_by_label("Name", exact=True).fill("alice-laptop")
                    page.get_by_label("Monthly limit (USD)").fill("20")
                    page.get_by_role("button", name="Create key", exact=True).click()
                    expect(page.locator("[data-secret-panel]")).to_be_visible()
                    outcome["panel"] = page.locator("[data-secret-panel]").inner_text()

                    page.goto("/keys/new/")
                    signed_in.set()
                    assert aged.wait(10)
                    page.get_by_label("Name", exact=True).fill("alice-desktop")
                    page.evaluate("document.querySelector('form[method=post] [name=nonce]').form.submit()")
                    provider_sign_in(page)  # prompt=login: the provider asks again
                    page.wait_for_url(live_server.url + "/keys/new/")
                    expect(page.get_by_label("Name", exact=True)).to_be_visible()
                    outcome["url"] = page.url
                finally:
                    browser.close()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc
            signed_in.set()

    worker = threading.Thread(target=drive, name="playwright-oidc")
    worker.start()
    signed_in.wait(30)
    if "error" not in outcome:
        _age_all_sessions(13 * 3600)
    aged.set()
    worker.join(60)
    assert not worker.is_alive(), "the browser flow did not finish within 60 s"
    if "error" in outcome:
        raise outcome["error"]
    assert canary in outcome["panel"]
    user = alice()
    assert list(user.issued_keys.values_list("name", flat=True)) == ["alice-laptop"]  # the stale post minted nothing
    actions = [e.action for e in AuditEvent.objects.order_by("seq")]
    assert actions == ["auth.signed_in", "mint.requested", "mint.issued", "auth.signed_in"]


def _age_all_sessions(seconds: int) -> None:
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    for key in Session.objects.values_list("session_key", flat=True):
        session = SessionStore(session_key=key)
        if sso.SIGNED_IN_AT in session:
            session[sso.SIGNED_IN_AT] = time.time() - seconds
            session.save()
