"""Single sign-on that fails: every refusal audited, the ones anyone can send bounded."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests
from django.test import Client

from portal.accounts.backends import OIDCBackend
from tests.accounts.helpers import ALICE, PORTAL, events, sso_sign_in, start
from tests.accounts.oidc_idp import path_of, provider_login


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
    sso_sign_in(client)
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

    monkeypatch.setattr(OIDCBackend, "get_token", down)
    for _ in range(3):
        browser = Client()
        back = provider_login(start(browser), "alice", ALICE["password"], PORTAL)
        assert browser.get(path_of(back)).status_code == 502
    assert len(events("auth.sign_in_failed")) == 3
    assert all(
        e.detail.startswith("Test IdP: token exchange failed: ConnectionError") for e in events("auth.sign_in_failed")
    )


def test_unreachable_provider_is_a_clear_error(client, oidc, settings):
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # nothing listens there: discovery fails
    assert client.get("/accounts/login/").status_code == 200  # the page itself needs no provider
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 503 and "cannot be reached" in response.content.decode()
    assert "provider unavailable" in events("auth.sign_in_failed")[0].detail
