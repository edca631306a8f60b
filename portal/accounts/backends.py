"""The authentication backends (AUTHENTICATION_BACKENDS, after the sign-in throttle's): Django's
username and password, and mozilla-django-oidc's single sign-on. Both are Django's `ModelBackend`
for loading the signed-in user, and read their permissions in one query (OnePermissionQuery)."""

from __future__ import annotations

import time

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import SuspiciousOperation
from django.db.models import Q
from django.views.decorators.debug import sensitive_variables
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from requests.auth import HTTPBasicAuth

from portal.audit.models import AuditEvent

from . import oidc
from .failures import AGAIN, provider_failed, refuse
from .provisioning import provision

CLOCK_LEEWAY_SECONDS = 60


class OnePermissionQuery:
    """Every signed-in page asks for the person's permissions (navigation, spending policy).
    ModelBackend reads their own and their groups' in two queries; this reads both in one, through
    the backend API's public `get_all_permissions`, cached on the user object for the request as
    ModelBackend does. The answer is the same set (tests/accounts/test_permissions_query.py)."""

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_portal_permissions"):
            perms = Permission.objects.all()
            if not user_obj.is_superuser:  # two indexed subqueries, not joins that multiply rows
                own = get_user_model().user_permissions.through.objects.filter(user_id=user_obj.pk)
                own = own.values("permission_id")
                grouped = Group.permissions.through.objects.filter(group__user=user_obj).values("permission_id")
                perms = perms.filter(Q(pk__in=own) | Q(pk__in=grouped))
            rows = perms.values_list("content_type__app_label", "codename").order_by()
            user_obj._portal_permissions = {f"{app}.{codename}" for app, codename in rows}
        return user_obj._portal_permissions


class PasswordBackend(OnePermissionQuery, ModelBackend):
    """Django's username and password. While SSO is on, only superusers may use it (break-glass),
    and nobody once OIDC_BREAK_GLASS is off; Django's admin sign-in goes through here too."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and oidc.enabled() and not (settings.OIDC_BREAK_GLASS and user.is_superuser):
            return None
        return user


class OIDCBackend(OnePermissionQuery, OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, with lazy discovery, audience checks, the portal's users,
    and every call to the provider through `oidc.http()`."""

    get_settings = staticmethod(oidc.oidc_setting)

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

    # Django's, not the library's (which would still load a deactivated user): a deactivated
    # user's next request is anonymous.
    get_user = ModelBackend.get_user

    # Every local hidden from error reports, here and below (the library's token request holds the
    # client secret). It must be this method: Django's own `authenticate` wraps it with
    # sensitive_variables("credentials"), and the nearest such wrapper up the stack is the one used.
    @sensitive_variables()
    def authenticate(self, request, **kwargs):
        # Only the callback view's call (nonce and PKCE verifier) is ours; never a password form's.
        if not oidc.enabled() or request is None or set(kwargs) != {"nonce", "code_verifier"}:
            return None
        return super().authenticate(request, **kwargs)

    # --- The three calls the library makes to the provider, through oidc.http() ------------------
    def get_token(self, payload):
        auth = None
        if self.get_settings("OIDC_TOKEN_USE_BASIC_AUTH", False):  # the secret in a header, not the body
            auth = HTTPBasicAuth(payload["client_id"], payload.pop("client_secret"))
        with oidc.http() as session:
            response = session.post(self.OIDC_OP_TOKEN_ENDPOINT, data=payload, auth=auth)
        self.raise_token_response_error(response)
        return response.json()

    def retrieve_matching_jwk(self, token):
        """The provider's key with the token's `kid` (and `alg`, where the key names one)."""
        with oidc.http() as session:
            response = session.get(self.OIDC_OP_JWKS_ENDPOINT)
        response.raise_for_status()
        header = jwt.get_unverified_header(token)
        matches = [
            jwk
            for jwk in response.json()["keys"]
            if jwk.get("kid") == str(header["kid"]) and jwk.get("alg", header["alg"]) == header["alg"]
        ]
        if not matches:
            raise SuspiciousOperation("Could not find a valid JWKS.")
        return jwt.PyJWK(matches[-1])

    def get_userinfo(self, access_token, id_token, payload):
        with oidc.http() as session:
            response = session.get(self.OIDC_OP_USER_ENDPOINT, headers={"Authorization": f"Bearer {access_token}"})
        response.raise_for_status()
        if response.headers.get("content-type", "").lower().startswith("application/jwt"):
            return self.verify_token(response.text)  # userinfo as a signed JWT
        return response.json()

    # --- The ID token and the user -------------------------------------------------------------
    def get_payload_data(self, token, key):
        return self.verify_signed_token(token, key)  # never an unsigned token, never the library's checks

    def verify_signed_token(self, payload, key):
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
                issuer=oidc.issuers(),
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
                raise refuse(
                    request,
                    "userinfo is not about the ID token's subject",
                    provider_failed(),
                    status=502,
                    outcome=AuditEvent.Outcome.FAILURE,
                )
            claims.update(info)
            claims.update(iss=payload["iss"], sub=payload["sub"])
        auth_time = _check_fresh(request, payload)
        user, note = provision(request, claims)
        user.portal_sign_in_note = f"{oidc.provider_name()} ({claims['iss']}, sub {claims['sub']}){note}"
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
        raise refuse(
            request,
            f"provider did not re-authenticate (auth_time {int(now - auth_time)}s ago, max_age {max_age}s)",
            f"{oidc.provider_name()} did not confirm a fresh sign-in, which creating a key needs. " + AGAIN,
        )
    return min(now, float(auth_time))
