"""Single sign-on's configuration (portal/accounts/oidc.py): discovery, explicit endpoints, the
ID token's checks, deploy checks, and how the portal calls the provider."""

from __future__ import annotations

import socket
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.test import Client

import portal.accounts.oidc
from portal.accounts.backends import OIDCBackend
from portal.accounts.models import OIDCIdentity
from tests.accounts.helpers import ALICE, PORTAL, events, sso_sign_in, start
from tests.accounts.oidc_idp import CLIENT_ID, CLIENT_SECRET, path_of, provider_login


def test_explicit_endpoints_win_over_discovery(client, oidc, settings):
    settings.OIDC_AUTHORIZATION_ENDPOINT = "https://idp.example/explicit/authorize"
    assert start(client).startswith("https://idp.example/explicit/authorize?")


def test_explicit_endpoints_alone_sign_in(client, oidc, settings):
    document = portal.accounts.oidc.discovery()
    settings.OIDC_ISSUER = ""
    settings.OIDC_AUTHORIZATION_ENDPOINT = document["authorization_endpoint"]
    settings.OIDC_TOKEN_ENDPOINT = document["token_endpoint"]
    settings.OIDC_USERINFO_ENDPOINT = document["userinfo_endpoint"]
    settings.OIDC_JWKS_ENDPOINT = document["jwks_uri"]
    assert sso_sign_in(client).status_code == 302
    assert OIDCIdentity.objects.get().issuer == oidc.issuer


def test_discovery_is_lazy_and_cached(oidc, settings, monkeypatch):

    cache.clear()
    calls = []
    fetch = portal.accounts.oidc.fetch_discovery
    monkeypatch.setattr(portal.accounts.oidc, "fetch_discovery", lambda issuer: calls.append(issuer) or fetch(issuer))
    client = Client()
    client.get("/accounts/login/")
    assert calls == []  # rendering the sign-in page does not need the provider
    start(client)
    start(client)
    assert calls == [oidc.issuer]


def _token(key, **claims) -> str:
    now = int(time.time())
    payload = {
        "iss": portal.accounts.oidc.expected_issuer(),
        "sub": "s",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 60,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k"})


@pytest.mark.parametrize(
    "claims",
    [{"aud": "another-client"}, {"iss": "https://impostor.example"}, {"exp": int(time.time()) - 3600}],
    ids=["audience", "issuer", "expired"],
)
def test_id_token_audience_issuer_and_expiry_are_verified(oidc, claims):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    backend = OIDCBackend()
    assert backend.verify_signed_token(_token(key), key.public_key())["sub"] == "s"
    with pytest.raises(SuspiciousOperation):
        backend.verify_signed_token(_token(key, **claims), key.public_key())
    with pytest.raises(SuspiciousOperation):  # signed by someone else
        backend.verify_signed_token(
            _token(key), rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        )
    with pytest.raises(SuspiciousOperation):  # an HMAC token keyed with something public
        backend.verify_signed_token(jwt.encode({"sub": "s"}, "x" * 32, algorithm="HS256"), key.public_key())


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


# --- Calls to the provider: OIDC_TIMEOUT, and nothing from the environment (portal/http.py) --------
@pytest.fixture
def silent_server():
    """A loopback address that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_discovery_gives_up_after_oidc_timeout(client, oidc, settings, silent_server):
    cache.clear()
    settings.OIDC_ISSUER, settings.OIDC_TIMEOUT = silent_server, 0.3
    began = time.monotonic()
    response = client.get("/oidc/authenticate/")
    assert 0.3 <= time.monotonic() - began < 3
    assert response.status_code == 503
    assert events("auth.sign_in_failed")[0].detail.endswith("failed: ReadTimeout")


def test_the_token_request_gives_up_after_oidc_timeout(client, oidc, settings, silent_server):
    """The library's own calls (token, JWKS, userinfo) are made through the portal's session too."""
    back = provider_login(start(client), "alice", ALICE["password"], PORTAL)
    settings.OIDC_TOKEN_ENDPOINT, settings.OIDC_TIMEOUT = silent_server + "/token", 0.3
    began = time.monotonic()
    response = client.get(path_of(back))
    assert 0.3 <= time.monotonic() - began < 3
    assert response.status_code == 502
    assert events("auth.sign_in_failed")[0].detail == "Test IdP: token exchange failed: ReadTimeout"


def test_calls_to_the_provider_ignore_proxies_from_the_environment(client, oidc, monkeypatch):
    back = provider_login(start(client), "alice", ALICE["password"], PORTAL)
    cache.clear()  # discovery again, at the callback, with the rest
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        for spelling in (name, name.lower()):
            monkeypatch.setenv(spelling, "http://127.0.0.1:9")  # nothing listens there
    for spelling in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(spelling, raising=False)
    with pytest.raises(requests.ConnectionError):  # what a client that reads the environment gets
        requests.get(oidc.issuer + "/.well-known/openid-configuration", timeout=5)
    response = client.get(path_of(back))  # discovery, token, JWKS and userinfo, each straight there
    assert response.status_code == 302 and client.get("/").status_code == 200
    assert events("auth.signed_in")


def test_the_provider_certificate_is_checked_against_requests_ca_bundle_when_set(monkeypatch, tmp_path):
    """A provider on an internal CA keeps working: REQUESTS_CA_BUNDLE is honoured for it (and only
    for it: the Requesty client's session never reads the environment)."""
    from keys import requesty

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    assert portal.accounts.oidc.http().verify is True
    bundle = tmp_path / "internal-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    session = portal.accounts.oidc.http()
    assert session.verify == str(bundle) and session.trust_env is False
    assert requesty.transport.session.verify is True and requesty.transport.session.trust_env is False
