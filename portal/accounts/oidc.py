"""Single sign-on with the company's OpenID Connect provider, on top of mozilla-django-oidc: its
configuration and discovery.

The library does the protocol: authorization code flow, `state` and `nonce` kept in the session and
checked on the way back, PKCE, the token exchange, the ID token's signature against the provider's
JWKS. The portal adds what it lacks or leaves open, and nothing else, one job per module:

- here: discovery (endpoints come from `{OIDC_ISSUER}/.well-known/openid-configuration`, fetched at
  first use, never at start-up, and cached; explicit endpoint settings win), the security choices
  no setting may weaken (`FIXED`), and every call to the provider (`http()`: OIDC_TIMEOUT, no
  proxies from the environment);
- backends.py: the password and OIDC backends; the ID token's audience, issuer and expiry are
  verified (the library skips the audience);
- provisioning.py: users found by issuer + subject (`OIDCIdentity`), created on first sign-in,
  refreshed at every sign-in; e-mail domains restricted; provider groups mapped to portal groups;
- views.py: the sign-in page, the start of the code flow and the callback, every refusal audited;
- reauth.py: minting needs a recent sign-in, renewed through the provider with `max_age` and
  `prompt=login` (OIDC_REAUTH_PROMPT), or through the password form for break-glass;
- signals.py: every sign-in, refusal and sign-out is an audit event.
"""

from __future__ import annotations

import hashlib
import os

import requests
from django.conf import settings
from django.core.cache import cache
from mozilla_django_oidc.utils import import_from_settings

from portal import http as portal_http

DISCOVERY_CACHE_SECONDS = 60 * 60

# Protocol choices for mozilla-django-oidc that no setting may weaken.
FIXED = {
    "OIDC_USE_PKCE": True,
    "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
    "OIDC_USE_NONCE": True,
    "OIDC_RP_SIGN_ALGO": "RS256",
    "OIDC_RP_IDP_SIGN_KEY": None,  # always the provider's JWKS
    "OIDC_ALLOW_UNSECURED_JWT": False,
    "OIDC_VERIFY_SSL": True,
    "OIDC_STORE_ACCESS_TOKEN": False,  # tokens are used once, at sign-in, and kept nowhere
    "OIDC_STORE_ID_TOKEN": False,
    "OIDC_CREATE_USER": True,
    "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc_authentication_callback",
}


class DiscoveryError(Exception):
    """The provider's configuration could not be fetched or does not fit the settings."""


# The portal's settings for endpoints, by their names in the discovery document.
EXPLICIT = {
    "authorization_endpoint": "OIDC_AUTHORIZATION_ENDPOINT",
    "token_endpoint": "OIDC_TOKEN_ENDPOINT",
    "userinfo_endpoint": "OIDC_USERINFO_ENDPOINT",
    "jwks_uri": "OIDC_JWKS_ENDPOINT",
}
_REQUIRED = ("authorization_endpoint", "token_endpoint", "jwks_uri")


def enabled() -> bool:
    """SSO is on when the client is registered and the provider can be found."""
    explicit = all(getattr(settings, EXPLICIT[name]) for name in _REQUIRED)
    return bool(settings.OIDC_CLIENT_ID and settings.OIDC_CLIENT_SECRET and (settings.OIDC_ISSUER or explicit))


def provider_name() -> str:
    return settings.OIDC_PROVIDER_NAME or "SSO"


def http() -> requests.Session:
    """A session for calls to the provider (discovery, token, JWKS, userinfo): OIDC_TIMEOUT to
    connect and again to read, no proxy from the environment (portal/http.py), the CA bundle
    REQUESTS_CA_BUNDLE names if set. A new one for each call, so
    no cookie the provider sets reaches anyone else's."""
    session = portal_http.session(timeout=lambda: (settings.OIDC_TIMEOUT, settings.OIDC_TIMEOUT))
    # A provider on an internal CA: the bundle requests itself would honour, still honoured here.
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
    return session


def discovery() -> dict:
    """The provider's published configuration: fetched at first use, then from the cache."""
    issuer = settings.OIDC_ISSUER
    if not issuer:
        return {}
    key = "oidc-discovery:" + hashlib.sha256(issuer.encode()).hexdigest()
    document = cache.get(key)
    if document is None:
        document = fetch_discovery(issuer)
        cache.set(key, document, DISCOVERY_CACHE_SECONDS)
    return document


def fetch_discovery(issuer: str) -> dict:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with http() as session:
            response = session.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise DiscoveryError(f"discovery at {url} failed: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise DiscoveryError(f"discovery at {url} did not return a JSON object")
    published = str(document.get("issuer", ""))
    if published.rstrip("/") != issuer.rstrip("/"):
        raise DiscoveryError(f"discovery at {url} names issuer {published!r}, not OIDC_ISSUER {issuer!r}")
    return document


def endpoint(name: str, required: bool = True) -> str | None:
    """An endpoint URL: its explicit setting if set, else the discovery document's."""
    value = getattr(settings, EXPLICIT[name]) or discovery().get(name)
    if not value and required:
        raise DiscoveryError(f"the provider publishes no {name}; set {EXPLICIT[name]}")
    return value or None


def expected_issuer() -> str | None:
    """The `iss` every ID token must carry: the discovered issuer, else OIDC_ISSUER (explicit
    endpoints without an issuer accept the signed token's own `iss`)."""
    if not settings.OIDC_ISSUER:
        return None
    if all(getattr(settings, EXPLICIT[name]) for name in _REQUIRED):
        return settings.OIDC_ISSUER
    return discovery()["issuer"]


def issuers() -> list[str] | None:
    """Every accepted spelling of the expected issuer (None: the token's own, see above)."""
    issuer = expected_issuer()
    if issuer == "https://accounts.google.com":
        return [issuer, "accounts.google.com"]  # Google documents both forms of its `iss`
    return [issuer] if issuer else None


def _token_basic_auth() -> bool:
    """client_secret_basic (the standard's default) unless the provider only takes the secret in
    the form body. Basic keeps the secret out of request bodies."""
    methods = discovery().get("token_endpoint_auth_methods_supported") if settings.OIDC_ISSUER else None
    return not methods or "client_secret_basic" in methods


def _scopes() -> str:
    scopes = settings.OIDC_SCOPES.split()
    return " ".join(scopes if "openid" in scopes else ["openid", *scopes])


DERIVED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": lambda: endpoint("authorization_endpoint"),
    "OIDC_OP_TOKEN_ENDPOINT": lambda: endpoint("token_endpoint"),
    "OIDC_OP_USER_ENDPOINT": lambda: endpoint("userinfo_endpoint", required=False),
    "OIDC_OP_JWKS_ENDPOINT": lambda: endpoint("jwks_uri"),
    "OIDC_RP_CLIENT_ID": lambda: settings.OIDC_CLIENT_ID,
    "OIDC_RP_CLIENT_SECRET": lambda: settings.OIDC_CLIENT_SECRET,
    "OIDC_RP_SCOPES": _scopes,
    "OIDC_TOKEN_USE_BASIC_AUTH": _token_basic_auth,
}


def oidc_setting(attr: str, *default):
    """mozilla-django-oidc's `get_settings`: fixed choices, then values derived from the portal's
    settings and discovery (resolved when asked for, not before), then Django settings."""
    if attr in FIXED:
        return FIXED[attr]
    if attr in DERIVED:
        return DERIVED[attr]()
    return import_from_settings(attr, *default)
