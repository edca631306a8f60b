"""Single sign-on against a real OpenID Connect provider (tests/accounts/oidc_idp.py): signing in,
OIDC_ONLY and break-glass."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.test import Client

from portal.accounts.models import OIDCIdentity
from tests.accounts.helpers import ALICE, PORTAL, alice, events, sso_sign_in, start
from tests.accounts.oidc_idp import CLIENT_ID, CLIENT_SECRET


def test_without_settings_there_is_no_sso(client, db):
    html = client.get("/accounts/login/").content.decode()
    assert "Sign in with" not in html and ">Sign in</button>" in html
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


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
    response = sso_sign_in(client, next_url="/keys/")
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


def test_next_cannot_leave_the_portal(client, oidc):
    response = sso_sign_in(client, next_url="//evil.example/")
    assert response.status_code == 302 and response["Location"] == "/"


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
