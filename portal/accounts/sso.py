"""Single sign-on with the company's OpenID Connect provider, on top of mozilla-django-oidc.

The library does the protocol: authorization code flow, `state` and `nonce` kept in the session and
checked on the way back, PKCE, the token exchange, the ID token's signature against the provider's
JWKS. This module adds what it lacks or leaves open, and nothing else:

- discovery: endpoints come from `{OIDC_ISSUER}/.well-known/openid-configuration`, fetched at first
  use (never at start-up), cached, with explicit timeouts; explicit endpoint settings win;
- the security choices are fixed here, not in settings (`_FIXED`), and the ID token's audience,
  issuer and expiry are verified (the library skips the audience);
- users are found by issuer + subject (`OIDCIdentity`), created on first sign-in, refreshed at every
  sign-in; e-mail domains are restricted; provider groups map to portal groups, and only the
  memberships sign-in granted (`SSOGroupGrant`) are ever taken away;
- every sign-in, refusal (with its reason) and sign-out is an audit event;
- minting needs a recent sign-in (`require_recent_sign_in`), renewed through the provider with
  `max_age` and `prompt=login` (OIDC_REAUTH_PROMPT), or through the password form for break-glass.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from dataclasses import dataclass
from functools import wraps
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import requests
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.dispatch import receiver
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.generic import View
from django_htmx.http import HttpResponseClientRedirect
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from portal.audit import bounds, chain
from portal.audit.models import AuditEvent

from .models import OIDCIdentity, SSOGroupGrant

logger = logging.getLogger(__name__)

ADMIN_GROUP = "Portal admins"  # created by migration 0003 with keys.portal_admin and audit.view_audit_log
DISCOVERY_CACHE_SECONDS = 60 * 60
CLOCK_LEEWAY_SECONDS = 60
SIGNED_IN_AT = "portal_signed_in_at"  # session keys
SIGN_IN_METHOD = "portal_sign_in_method"
_REAUTH_STATES = "portal_oidc_reauth"  # state -> max_age, for sign-ins that must be fresh

# Protocol choices for mozilla-django-oidc that no setting may weaken.
_FIXED = {
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


# --- Configuration and discovery ------------------------------------------------------------------
class DiscoveryError(Exception):
    """The provider's configuration could not be fetched or does not fit the settings."""


_EXPLICIT = {
    "authorization_endpoint": "OIDC_AUTHORIZATION_ENDPOINT",
    "token_endpoint": "OIDC_TOKEN_ENDPOINT",
    "userinfo_endpoint": "OIDC_USERINFO_ENDPOINT",
    "jwks_uri": "OIDC_JWKS_ENDPOINT",
}
_REQUIRED = ("authorization_endpoint", "token_endpoint", "jwks_uri")


def enabled() -> bool:
    """SSO is on when the client is registered and the provider can be found."""
    explicit = all(getattr(settings, _EXPLICIT[name]) for name in _REQUIRED)
    return bool(settings.OIDC_CLIENT_ID and settings.OIDC_CLIENT_SECRET and (settings.OIDC_ISSUER or explicit))


def provider_name() -> str:
    return settings.OIDC_PROVIDER_NAME or "SSO"


def discovery() -> dict:
    """The provider's published configuration: fetched at first use, then from the cache."""
    issuer = settings.OIDC_ISSUER
    if not issuer:
        return {}
    key = "oidc-discovery:" + hashlib.sha256(issuer.encode()).hexdigest()
    document = cache.get(key)
    if document is None:
        document = _fetch_discovery(issuer)
        cache.set(key, document, DISCOVERY_CACHE_SECONDS)
    return document


def _fetch_discovery(issuer: str) -> dict:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    timeout = (settings.OIDC_TIMEOUT, settings.OIDC_TIMEOUT)
    try:
        response = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
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
    value = getattr(settings, _EXPLICIT[name]) or discovery().get(name)
    if not value and required:
        raise DiscoveryError(f"the provider publishes no {name}; set {_EXPLICIT[name]}")
    return value or None


def expected_issuer() -> str | None:
    """The `iss` every ID token must carry: the discovered issuer, else OIDC_ISSUER (explicit
    endpoints without an issuer accept the signed token's own `iss`)."""
    if not settings.OIDC_ISSUER:
        return None
    if all(getattr(settings, _EXPLICIT[name]) for name in _REQUIRED):
        return settings.OIDC_ISSUER
    return discovery()["issuer"]


def _issuers() -> list[str] | None:
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


_DERIVED = {
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
    if attr in _FIXED:
        return _FIXED[attr]
    if attr in _DERIVED:
        return _DERIVED[attr]()
    return import_from_settings(attr, *default)


# --- Why a sign-in failed -------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    reason: str  # for the audit log
    message: str  # for the person
    status: int = 403
    outcome: str = AuditEvent.Outcome.DENIED


class SignInRefused(SuspiciousOperation):
    pass


def _refuse(request, reason: str, message: str, **kwargs) -> SignInRefused:
    request.portal_sso_failure = Failure(reason, message, **kwargs)
    return SignInRefused(reason)


_AGAIN = "Please try again."
_FAILURE = AuditEvent.Outcome.FAILURE


def _provider_failed() -> str:
    return f"Sign-in with {provider_name()} failed: the identity provider did not answer as expected. {_AGAIN}"


# --- The backends ---------------------------------------------------------------------------------
class LeanModelBackend:
    """ModelBackend's two per-request reads in plain SQL: the signed-in user (Django builds
    `User.objects.get(pk=...)` through the ORM on every request) and their permissions (two ORM
    queries, the user's own and their groups', asked on every page for the navigation's admin
    links). Building those queries was over a fifth of the portal's CPU per mint
    (docs/performance.md). Same answers and the same per-request cache (`_perm_cache`) as
    ModelBackend; deactivated users get no user at once, as with ModelBackend (mozilla-django-oidc's
    own `get_user` would still load them); superusers, inactive users and object permissions take
    ModelBackend's own path for permissions."""

    def get_user(self, user_id):
        model = get_user_model()
        try:
            pk = model._meta.pk.to_python(user_id)
        except ValidationError:
            return None
        user = next(iter(model._default_manager.raw(_user_sql(), [pk])), None)  # raw(): Django's converters
        return user if user is not None and self.user_can_authenticate(user) else None

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None or user_obj.is_superuser:
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, "_perm_cache"):
            with connection.cursor() as cursor:
                cursor.execute(_permissions_sql(), [user_obj.pk, user_obj.pk])
                user_obj._perm_cache = {f"{app_label}.{codename}" for app_label, codename in cursor.fetchall()}
        return user_obj._perm_cache


@functools.cache
def _user_sql() -> str:
    meta, qn = get_user_model()._meta, connection.ops.quote_name
    columns = ", ".join(qn(field.column) for field in meta.concrete_fields)
    return f"SELECT {columns} FROM {qn(meta.db_table)} WHERE {qn(meta.pk.column)} = %s"  # noqa: S608 (model metadata)


@functools.cache
def _permissions_sql() -> str:
    user_model = get_user_model()
    qn = connection.ops.quote_name
    tables = {
        "permission": Permission._meta.db_table,
        "content_type": ContentType._meta.db_table,
        "user_perms": user_model.user_permissions.through._meta.db_table,
        "user_groups": user_model.groups.through._meta.db_table,
        "group_perms": Group.permissions.through._meta.db_table,
    }
    t = {name: qn(table) for name, table in tables.items()}
    return (
        f"SELECT ct.app_label, p.codename FROM {t['permission']} p"  # noqa: S608 (model metadata)
        f" JOIN {t['content_type']} ct ON ct.id = p.content_type_id"
        f" WHERE p.id IN (SELECT permission_id FROM {t['user_perms']} WHERE user_id = %s"
        f" UNION SELECT gp.permission_id FROM {t['group_perms']} gp"
        f" JOIN {t['user_groups']} ug ON ug.group_id = gp.group_id WHERE ug.user_id = %s)"
    )


class PasswordBackend(LeanModelBackend, ModelBackend):
    """Django's username and password. While SSO is on, only superusers may use it (break-glass),
    and nobody once OIDC_BREAK_GLASS is off; Django's admin sign-in goes through here too."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and enabled() and not (settings.OIDC_BREAK_GLASS and user.is_superuser):
            return None
        return user


class OIDCBackend(LeanModelBackend, OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, with lazy discovery, audience checks and the portal's users."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args, **kwargs):
        # The library resolves every endpoint here; Django builds backends on every request of a
        # signed-in user, and browsing must not depend on the provider. Resolved on use instead.
        self.UserModel = get_user_model()

    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: self.get_settings("OIDC_OP_TOKEN_ENDPOINT"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: self.get_settings("OIDC_OP_USER_ENDPOINT"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: self.get_settings("OIDC_OP_JWKS_ENDPOINT"))
    OIDC_RP_CLIENT_ID = property(lambda self: self.get_settings("OIDC_RP_CLIENT_ID"))
    OIDC_RP_CLIENT_SECRET = property(lambda self: self.get_settings("OIDC_RP_CLIENT_SECRET"))
    OIDC_RP_SIGN_ALGO = property(lambda self: self.get_settings("OIDC_RP_SIGN_ALGO"))
    OIDC_RP_IDP_SIGN_KEY = property(lambda self: self.get_settings("OIDC_RP_IDP_SIGN_KEY"))

    # Every local hidden from error reports, here and below (the library's token request holds the
    # client secret). It must be this method: Django's own `authenticate` wraps it with
    # sensitive_variables("credentials"), and the nearest such wrapper up the stack is the one used.
    @sensitive_variables()
    def authenticate(self, request, **kwargs):
        # Only the callback view's call (nonce and PKCE verifier) is ours; never a password form's.
        if not enabled() or request is None or set(kwargs) != {"nonce", "code_verifier"}:
            return None
        return super().authenticate(request, **kwargs)

    def get_payload_data(self, token, key):
        return self._verify_jws(token, key)  # never an unsigned token

    def _verify_jws(self, payload, key):
        """Signature, algorithm, audience (this client), issuer and expiry of a signed token."""
        algorithm = jwt.get_unverified_header(payload).get("alg")
        if algorithm != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"token signed with {algorithm!r}, expected {self.OIDC_RP_SIGN_ALGO}")
        client_id = self.OIDC_RP_CLIENT_ID
        try:
            claims = jwt.decode(
                payload,
                key,
                algorithms=[algorithm],
                audience=client_id,
                issuer=_issuers(),
                leeway=CLOCK_LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"token rejected: {exc}") from None
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
            raise SuspiciousOperation("token has several audiences and is not authorized for this client")
        return claims

    def get_or_create_user(self, access_token, id_token, payload):
        request = self.request
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            info = self.get_userinfo(access_token, id_token, payload)
            if not isinstance(info, dict) or info.get("sub") != payload["sub"]:
                raise _refuse(
                    request,
                    "userinfo is not about the ID token's subject",
                    _provider_failed(),
                    status=502,
                    outcome=AuditEvent.Outcome.FAILURE,
                )
            claims.update(info)
            claims.update(iss=payload["iss"], sub=payload["sub"])
        auth_time = _check_fresh(request, payload)
        email = _allowed_email(request, claims)
        with transaction.atomic():
            user, note = _user_for(claims, email)
            if not user.is_active:
                raise _refuse(
                    request,
                    f"account {user.username} is deactivated",
                    "Your portal account is deactivated. Ask a portal admin if this is a mistake.",
                )
            _refresh(user, claims, email)
            note += _sync_groups(user, _claim_groups(claims))
        user.portal_sign_in_note = f"{provider_name()} ({claims['iss']}, sub {claims['sub']}){note}"
        user.portal_authenticated_at = auth_time
        return user


def _check_fresh(request, id_token: dict) -> float:
    """When the provider last signed the person in (`auth_time`, else now), which counts as the
    sign-in time for minting. A re-authentication asked for `max_age`: an older `auth_time` is
    refused, or the portal would send the person round again and again."""
    now = time.time()
    auth_time = id_token.get("auth_time")
    if not isinstance(auth_time, int | float) or isinstance(auth_time, bool):
        return now
    max_age = getattr(request, "portal_sso_max_age", None)
    if max_age and now - auth_time > max_age + CLOCK_LEEWAY_SECONDS:
        raise _refuse(
            request,
            f"provider did not re-authenticate (auth_time {int(now - auth_time)}s ago, max_age {max_age}s)",
            f"{provider_name()} did not confirm a fresh sign-in, which creating a key needs. " + _AGAIN,
        )
    return min(now, float(auth_time))


def _allowed_email(request, claims: dict) -> str:
    email = str(claims.get("email") or "").strip()
    if "@" not in email:
        raise _refuse(
            request,
            "the provider sent no e-mail address",
            f"{provider_name()} did not share your e-mail address, which the portal needs.",
        )
    if str(claims.get("email_verified", "")).lower() == "false":
        raise _refuse(
            request,
            f"e-mail {email} is not verified at the provider",
            "Your e-mail address is not verified at the identity provider.",
        )
    domain = email.rsplit("@", 1)[1].lower()
    allowed = settings.OIDC_ALLOWED_EMAIL_DOMAINS
    if allowed and domain not in allowed:
        raise _refuse(
            request,
            f"wrong domain: e-mail {email} is not in OIDC_ALLOWED_EMAIL_DOMAINS",
            f"Accounts at {domain} may not use this portal. Sign in with your company account.",
        )
    return email


def _user_for(claims: dict, email: str):
    """The portal user behind this issuer and subject: the linked one, else a non-superuser with
    the same e-mail (accounts made before SSO keep their keys), else a new one."""
    User = get_user_model()
    # The verified `iss`, in the configured spelling (Google signs both forms of its issuer).
    issuer, subject = expected_issuer() or str(claims["iss"]), str(claims["sub"])
    identity = OIDCIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
    if identity is not None:
        OIDCIdentity.objects.filter(pk=identity.pk).update(last_sign_in_at=timezone.now())
        return identity.user, ""
    same_email = User.objects.filter(email__iexact=email, is_superuser=False).exclude(oidc_identities__issuer=issuer)
    matches = list(same_email[:2])
    if len(matches) == 1:
        user, note = matches[0], "; linked to the existing account"
    else:
        user = User.objects.create_user(_free_username(email), email=email)  # no usable password
        note = "; account created"
    try:
        with transaction.atomic():
            OIDCIdentity.objects.create(user=user, issuer=issuer, subject=subject, last_sign_in_at=timezone.now())
    except IntegrityError:  # a parallel first sign-in linked it a moment ago
        raise SuspiciousOperation("identity was linked concurrently; sign in again") from None
    return user, note


def _free_username(email: str) -> str:
    User = get_user_model()
    base = email.lower()[:140]
    candidate, n = base, 1
    while User.objects.filter(username=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _refresh(user, claims: dict, email: str) -> None:
    given = str(claims.get("given_name") or "")
    family = str(claims.get("family_name") or "")
    if not (given or family) and claims.get("name"):
        given, _, family = str(claims["name"]).partition(" ")
    values = {"email": email, "first_name": given[:150], "last_name": family[:150]}
    changed = [field for field, value in values.items() if getattr(user, field) != value]
    for field in changed:
        setattr(user, field, values[field])
    if changed:
        user.save(update_fields=changed)


def _claim_groups(claims: dict) -> set[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    return {str(group) for group in value if isinstance(group, str | int)} if isinstance(value, list) else set()


def admin_group() -> Group:
    """The "Portal admins" group (migration 0003), recreated if someone deleted it."""
    group, created = Group.objects.get_or_create(name=ADMIN_GROUP)
    if created:
        group.permissions.add(
            *Permission.objects.filter(
                Q(content_type__app_label="keys", codename="portal_admin")
                | Q(content_type__app_label="audit", codename="view_audit_log")
            )
        )
    return group


def _sync_groups(user, claimed: set[str]) -> str:
    """Make the memberships sign-in manages match the provider's groups; leave the rest alone."""
    wanted = set(Group.objects.filter(name__in=claimed, spending_policy__isnull=False).exclude(name=ADMIN_GROUP))
    if claimed & set(settings.OIDC_ADMIN_GROUPS):
        wanted.add(admin_group())
    current = set(user.groups.all())
    granted = {grant.group: grant for grant in SSOGroupGrant.objects.filter(user=user).select_related("group")}
    added = sorted(wanted - current, key=str)
    removed = sorted((group for group in granted if group not in wanted), key=str)
    if added:
        user.groups.add(*added)
        for group in added:
            SSOGroupGrant.objects.get_or_create(user=user, group=group)
    if removed:
        user.groups.remove(*removed)
        SSOGroupGrant.objects.filter(user=user, group__in=removed).delete()
    changes = [f"+{g.name}" for g in added] + [f"-{g.name}" for g in removed]
    return f"; groups {' '.join(changes)}" if changes else ""


# --- Views ----------------------------------------------------------------------------------------
def _next_url(request) -> str:
    url = request.GET.get("next") or request.POST.get("next") or ""
    safe = url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return url if safe else ""


def sso_url(next_url: str = "", reauth: bool = False) -> str:
    params = {"next": next_url} if next_url else {}
    if reauth:
        params["reauth"] = "1"
    url = reverse("oidc_authentication_init")
    return f"{url}?{urlencode(params)}" if params else url


def password_form_offered(request) -> bool:
    """Always without SSO; with it, for break-glass only (and with OIDC_ONLY, only when asked for)."""
    if not enabled():
        return True
    asked = request.method == "POST" or request.GET.get("break-glass") == "1"
    return settings.OIDC_BREAK_GLASS and (asked or not settings.OIDC_ONLY)


def login_context(request, next_url: str) -> dict:
    sso = enabled()
    return {
        "sso_enabled": sso,
        "sso_provider_name": provider_name(),
        "sso_url": sso_url(next_url) if sso else "",
        "show_password_form": password_form_offered(request),
        "reauth": request.GET.get("reauth") == "1",
        "signed_out": request.GET.get("signed-out") == "1",
    }


@method_decorator(login_not_required, name="dispatch")
class LoginView(auth_views.LoginView):
    """Django's sign-in page, plus "Sign in with <provider>"; with OIDC_ONLY it goes straight to
    the provider (break-glass: `?break-glass=1`)."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def dispatch(self, request, *args, **kwargs):
        if request.GET.get("reauth") == "1":
            self.redirect_authenticated_user = False  # a recent sign-in is what is asked for
        if (
            request.method == "GET"
            and enabled()
            and settings.OIDC_ONLY
            and request.GET.get("signed-out") != "1"
            and not (settings.OIDC_BREAK_GLASS and request.GET.get("break-glass") == "1")
            and not (self.redirect_authenticated_user and request.user.is_authenticated)
        ):
            return redirect(sso_url(_next_url(request), reauth=request.GET.get("reauth") == "1"))
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        return {**context, **login_context(self.request, self.get_redirect_url())}


_NOISE_KINDS = ("bad state", "provider error", "code refused")


def _url(exc: requests.RequestException) -> str:
    request = getattr(exc, "request", None)
    return (getattr(request, "url", None) or "").split("?")[0]


def _render_failure(request, failure: Failure):
    actor = request.user if request.user.is_authenticated else _ANONYMOUS
    values = {"actor": actor, "source_ip": chain.client_ip(request), "detail": f"{provider_name()}: {failure.reason}"}
    # Anyone can send these without signing in (a bad state needs nothing; a provider's `?error=`
    # answer or a made-up code only a state of their own, which /oidc/authenticate/ hands out):
    # bounded per address, each kind on its own. The rest are always recorded.
    kind = next((k for k in _NOISE_KINDS if failure.reason.startswith(k)), None)
    if kind:
        bounds.record_noise(AuditEvent.Action.AUTH_SIGN_IN_FAILED, failure.outcome, kind=kind, **values)
    else:
        chain.record(AuditEvent.Action.AUTH_SIGN_IN_FAILED, failure.outcome, **values)
    logger.warning("SSO sign-in failed: %s", failure.reason)
    context = {
        "form": AuthenticationForm(request),
        "next": "",
        **login_context(request, ""),
        "reauth": False,
        "sso_error": failure.message,
    }
    return render(request, "accounts/login.html", context, status=failure.status)


@method_decorator(never_cache, name="dispatch")
class SignInView(OIDCAuthenticationRequestView):
    """Starts the code flow: state, nonce and PKCE verifier into the session, then the provider.
    `?reauth=1` asks the provider for a fresh sign-in (`prompt=login`, `max_age`)."""

    get_settings = staticmethod(oidc_setting)
    OIDC_OP_AUTH_ENDPOINT = property(lambda self: self.get_settings("OIDC_OP_AUTHORIZATION_ENDPOINT"))
    OIDC_RP_CLIENT_ID = property(lambda self: self.get_settings("OIDC_RP_CLIENT_ID"))

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # not the library's: it would run discovery before `get`

    def get(self, request):
        if not enabled():
            raise Http404("Single sign-on is not configured.")
        try:
            response = super().get(request)
        except DiscoveryError as exc:
            message = f"{provider_name()} cannot be reached right now. Please try again in a few minutes."
            return _render_failure(request, Failure(f"provider unavailable: {exc}", message, 503, _FAILURE))
        if self._reauth(request):
            state = parse_qs(urlsplit(response.url).query)["state"][0]
            pending = request.session.get(_REAUTH_STATES) or {}
            pending = dict(list(pending.items())[-9:])  # a few parallel tabs at most
            pending[state] = settings.PORTAL_MINT_REAUTH_SECONDS
            request.session[_REAUTH_STATES] = pending
        return response

    @staticmethod
    def _reauth(request) -> bool:
        return request.GET.get("reauth") == "1"

    def get_extra_params(self, request):
        if not self._reauth(request):
            return {}
        params = {"max_age": str(settings.PORTAL_MINT_REAUTH_SECONDS)}
        if settings.OIDC_REAUTH_PROMPT:
            params["prompt"] = settings.OIDC_REAUTH_PROMPT
        if request.user.is_authenticated and request.user.email:
            params["login_hint"] = request.user.email
        return params


@method_decorator(never_cache, name="dispatch")
class CallbackView(OIDCAuthenticationCallbackView):
    """The provider sends the person back here with a code (or an error). Every way this can fail
    is audited with its reason and answered with the sign-in page, never a redirect loop."""

    get_settings = staticmethod(oidc_setting)

    # Every local hidden from error reports, in this frame and below (the nonce and PKCE verifier).
    @method_decorator(sensitive_variables())
    def get(self, request):
        if not enabled():
            raise Http404("Single sign-on is not configured.")
        state = request.GET.get("state", "")
        states = request.session.get("oidc_states") or {}
        known = state in states
        if known and request.GET.get("error"):
            # The provider said no (the person cancelled, or may not use this client). The state
            # is spent; unlike the library, the current session (if any) is left alone.
            del states[state]
            request.session.modified = True
            error = request.GET["error"][:64]
            description = request.GET.get("error_description", "")[:200]
            reason = f"provider error: {error}" + (f" ({description})" if description else "")
            message = f"{provider_name()} did not sign you in ({error}). " + _AGAIN
            return _render_failure(request, Failure(reason, message, 403))
        if not known or "code" not in request.GET:
            why = "no state" if not state else "unknown or already used" if not known else "no code"
            message = "That sign-in link has expired or was already used. " + _AGAIN
            return _render_failure(request, Failure(f"bad state: {why}", message, 400))
        pending = request.session.get(_REAUTH_STATES) or {}
        request.portal_sso_max_age = pending.pop(state, None)
        request.session[_REAUTH_STATES] = pending
        try:
            return super().get(request)
        except DiscoveryError as exc:
            failure = Failure(f"provider unavailable: {exc}", _provider_failed(), 503, _FAILURE)
        except requests.RequestException as exc:  # token, JWKS or userinfo request
            status = getattr(exc.response, "status_code", None)
            if status == 400 and _url(exc) == oidc_setting("OIDC_OP_TOKEN_ENDPOINT"):
                # The provider refused the code this browser brought (invalid_grant): a state is
                # free from /oidc/authenticate/, so this is junk anyone can send. Bounded.
                message = "That sign-in link has expired or was already used. " + _AGAIN
                failure = Failure("code refused by the provider's token endpoint (HTTP 400)", message, 400)
            else:  # the provider or the network failing, or a misconfiguration (401 invalid_client)
                reason = f"token exchange failed: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
                failure = Failure(reason, _provider_failed(), 502, _FAILURE)
        except (SuspiciousOperation, jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            # Nonce, signature, algorithm, audience, issuer, expiry, or a malformed answer.
            failure = Failure(f"ID token rejected: {exc}", _provider_failed(), 502, _FAILURE)
        return _render_failure(request, failure)

    def login_failure(self):
        default = Failure("sign-in refused", _provider_failed(), 403)
        return _render_failure(self.request, getattr(self.request, "portal_sso_failure", None) or default)

    def login_success(self):
        # Always a real login (sign-in time and audit event), even when the same person signs in
        # again to renew their session for minting.
        next_url = self.request.session.get("oidc_login_next")
        auth.login(self.request, self.user)
        return HttpResponseRedirect(next_url or resolve_url(settings.LOGIN_REDIRECT_URL))


sign_in = login_not_required(SignInView.as_view())
callback = login_not_required(CallbackView.as_view())


# --- Recent sign-in before minting ----------------------------------------------------------------
def signed_in_recently(request) -> bool:
    at = request.session.get(SIGNED_IN_AT)
    return isinstance(at, int | float) and time.time() - at <= settings.PORTAL_MINT_REAUTH_SECONDS


def reauth_url(request) -> str:
    """Where to renew the sign-in, returning to this page: through the provider for SSO sessions
    (and for anyone who may no longer use a password), else through the password form."""
    next_url = request.get_full_path() if request.method == "GET" else request.path
    by_password = not enabled() or (
        request.session.get(SIGN_IN_METHOD) == "password" and settings.OIDC_BREAK_GLASS and request.user.is_superuser
    )
    if by_password:
        return f"{reverse('login')}?{urlencode({'next': next_url, 'reauth': '1'})}"
    return sso_url(next_url, reauth=True)


def require_recent_sign_in(view):
    """The view runs only for a sign-in within PORTAL_MINT_REAUTH_SECONDS; otherwise the person
    signs in again and comes back (htmx requests get `HX-Redirect`, a full-page navigation)."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        if not request.user.is_authenticated or signed_in_recently(request):
            return view(request, *args, **kwargs)
        url = reauth_url(request)
        if getattr(request, "htmx", False):
            return HttpResponseClientRedirect(url)
        return redirect(url)

    return guarded


# --- Sign-in, failure and sign-out: session stamp and audit events --------------------------------
_ANONYMOUS = SimpleNamespace(pk=None, username="anonymous", email="")


def _during_request(request) -> bool:
    """Sign-ins made outside an HTTP request (the test client's force_login/login) are not events."""
    return request is not None and bool(getattr(request, "META", {}).get("REQUEST_METHOD"))


@receiver(user_logged_in, dispatch_uid="portal_sign_in")
def _signed_in(sender, request, user, **kwargs):
    if request is None or not hasattr(request, "session"):
        return
    method = "sso" if request.session.get(BACKEND_SESSION_KEY) == "portal.accounts.sso.OIDCBackend" else "password"
    # For SSO, when the provider says it authenticated the person (an old provider session makes
    # an old sign-in, and minting then asks for a fresh one).
    request.session[SIGNED_IN_AT] = getattr(user, "portal_authenticated_at", None) or time.time()
    request.session[SIGN_IN_METHOD] = method
    if not _during_request(request):
        return
    if method == "sso":
        detail = "single sign-on via " + getattr(user, "portal_sign_in_note", provider_name())
    else:
        detail = "password" + (" (break-glass while single sign-on is on)" if enabled() else "")
    chain.record(
        AuditEvent.Action.AUTH_SIGNED_IN,
        AuditEvent.Outcome.SUCCESS,
        actor=user,
        source_ip=chain.client_ip(request),
        detail=detail,
    )


def username_exists(username: str) -> bool:
    """The exact lookup ModelBackend signs in with: a name that fails it is nobody's account."""
    users = get_user_model()
    return users._default_manager.filter(**{users.USERNAME_FIELD: username}).exists()


def record_password_failure(known: bool, *, source_ip: str | None, detail: str) -> None:
    """A failed password sign-in, or its lockout (portal/accounts/throttle.py): always audited for a real
    account; for a made-up name, which costs nothing to send, within the junk bound per address
    (bounds.record_noise)."""
    args = (AuditEvent.Action.AUTH_SIGN_IN_FAILED, AuditEvent.Outcome.DENIED)
    if known:
        chain.record(*args, actor=_ANONYMOUS, source_ip=source_ip, detail=detail)
    else:
        bounds.record_noise(*args, kind="unknown username", actor=_ANONYMOUS, source_ip=source_ip, detail=detail)


@receiver(user_login_failed, dispatch_uid="portal_sign_in_failed")
def _sign_in_failed(sender, credentials, request=None, **kwargs):
    # The SSO callback audits its own failures, with their reasons. An attempt the sign-in
    # throttle refused (portal/accounts/throttle.py) is not an event: its lockout was audited once.
    if not _during_request(request) or "username" not in credentials:
        return
    if getattr(request, "portal_sign_in_blocked", False):
        return
    username = str(credentials["username"])
    known = username_exists(username)
    detail = f"password sign-in failed for {'username' if known else 'unknown username'} {username[:150]!r}"
    if enabled():
        detail += (
            " (while single sign-on is on, only superusers may use a password)"
            if settings.OIDC_BREAK_GLASS
            else " (password sign-in is off: OIDC_BREAK_GLASS=false)"
        )
    record_password_failure(known, source_ip=chain.client_ip(request), detail=detail)


@receiver(user_logged_out, dispatch_uid="portal_sign_out")
def _signed_out(sender, request, user, **kwargs):
    if user is None or not _during_request(request):
        return
    chain.record(
        AuditEvent.Action.AUTH_SIGNED_OUT,
        AuditEvent.Outcome.SUCCESS,
        actor=user,
        source_ip=chain.client_ip(request),
    )
