"""A recent sign-in before minting (portal/accounts/reauth.py)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

from portal.accounts.backends import OIDCBackend
from tests.accounts.helpers import ALICE, HTMX, PORTAL, age_session, events, sso_sign_in
from tests.accounts.oidc_idp import path_of, provider_login


def test_stale_sso_session_signs_in_again_before_minting(client, oidc, settings):
    settings.PORTAL_MINT_REAUTH_SECONDS = 3600
    sso_sign_in(client)
    assert client.get("/keys/new/").status_code == 200
    age_session(client, 3601)

    response = client.get("/keys/new/?name=laptop")
    assert response.status_code == 302
    assert response["Location"] == "/oidc/authenticate/?next=%2Fkeys%2Fnew%2F%3Fname%3Dlaptop&reauth=1"
    htmx = client.post("/keys/new/", {"name": "x"}, **HTMX)
    assert htmx.status_code == 200 and htmx["HX-Redirect"] == "/oidc/authenticate/?next=%2Fkeys%2Fnew%2F&reauth=1"
    assert "Location" not in htmx
    assert "HX-Request" in htmx["Vary"] and "HX-Request" in response["Vary"]

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
    sso_sign_in(client)
    age_session(client, 13 * 3600)
    authorize = client.get(client.get("/keys/new/")["Location"])["Location"]
    back = provider_login(authorize, "alice", ALICE["password"], PORTAL)
    # The provider answers as if it had ignored prompt=login: its auth_time is a day old.
    real = OIDCBackend.verify_signed_token
    monkeypatch.setattr(
        OIDCBackend, "verify_signed_token", lambda self, t, k: {**real(self, t, k), "auth_time": time.time() - 86400}
    )
    response = client.get(path_of(back))
    assert response.status_code == 403 and "did not confirm a fresh sign-in" in response.content.decode()
    assert "did not re-authenticate" in events("auth.sign_in_failed")[0].detail


def test_an_old_provider_session_makes_an_old_sign_in(client, oidc, monkeypatch, settings):
    """Signing in to the portal through a day-old provider session is a day-old sign-in: minting
    sends the person back to the provider, this time with max_age and the configured prompt."""
    real = OIDCBackend.verify_signed_token
    monkeypatch.setattr(
        OIDCBackend,
        "verify_signed_token",
        lambda self, t, k: {**real(self, t, k), "auth_time": int(time.time()) - 86400},
    )
    assert sso_sign_in(client).status_code == 302
    assert client.get("/").status_code == 200
    settings.OIDC_REAUTH_PROMPT = ""
    response = client.get("/keys/new/")
    assert response.status_code == 302 and "reauth=1" in response["Location"]
    params = parse_qs(urlsplit(client.get(response["Location"])["Location"]).query)
    assert params["max_age"] == ["43200"] and "prompt" not in params


def test_stale_password_session_goes_to_the_password_form(rclient, requester):
    age_session(rclient, 13 * 3600)
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
