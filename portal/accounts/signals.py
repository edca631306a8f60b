"""Sign-in, failed sign-in and sign-out, as Django's auth signals report them: the session's
sign-in stamp (for reauth.py) and the audit events. Connected when the app is ready (apps.py)."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.utils import timezone

from portal.audit import bounds, chain
from portal.audit.models import AuditEvent

from .backends import OIDCBackend
from .oidc import enabled, provider_name

SIGNED_IN_AT = "portal_signed_in_at"  # session keys
SIGN_IN_METHOD = "portal_sign_in_method"
ANONYMOUS = SimpleNamespace(pk=None, username="anonymous", email="")  # the actor of a failed sign-in

_OIDC_BACKEND = f"{OIDCBackend.__module__}.{OIDCBackend.__qualname__}"  # as the session names it


def _during_request(request) -> bool:
    """Sign-ins made outside an HTTP request (the test client's force_login/login) are not events."""
    return request is not None and bool(getattr(request, "META", {}).get("REQUEST_METHOD"))


@receiver(user_logged_in, dispatch_uid="portal_sign_in")
def _signed_in(sender, request, user, **kwargs):
    if request is None or not hasattr(request, "session"):
        return
    method = "sso" if request.session.get(BACKEND_SESSION_KEY) == _OIDC_BACKEND else "password"
    # For SSO, when the provider says it authenticated the person (an old provider session makes
    # an old sign-in, and minting then asks for a fresh one).
    request.session[SIGNED_IN_AT] = getattr(user, "portal_authenticated_at", None) or time.time()
    request.session[SIGN_IN_METHOD] = method
    # An absolute end, SESSION_COOKIE_AGE after this sign-in: a fixed expiry date is not pushed
    # forward when the session is saved again (the idle sign-out's last-seen writes, threat 16).
    request.session.set_expiry(timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE))
    if not _during_request(request):
        return
    if method == "sso":
        detail = "single sign-on via " + getattr(user, "portal_sign_in_note", provider_name())
    else:
        detail = "password" + (" (break-glass while single sign-on is on)" if enabled() else "")
    chain.record_request(request, AuditEvent.Action.AUTH_SIGNED_IN, actor=user, detail=detail)


def username_exists(username: str) -> bool:
    """The exact lookup ModelBackend signs in with: a name that fails it is nobody's account."""
    users = get_user_model()
    return users._default_manager.filter(**{users.USERNAME_FIELD: username}).exists()


def record_password_failure(known: bool, *, source_ip: str | None, detail: str) -> None:
    """A failed password sign-in, or its lockout (throttle.py): always audited for a real account;
    for a made-up name, which costs nothing to send, within the junk bound per address
    (bounds.record_noise)."""
    args = (AuditEvent.Action.AUTH_SIGN_IN_FAILED, AuditEvent.Outcome.DENIED)
    if known:
        chain.record(*args, actor=ANONYMOUS, source_ip=source_ip, detail=detail)
    else:
        bounds.record_noise(*args, kind="unknown username", actor=ANONYMOUS, source_ip=source_ip, detail=detail)


@receiver(user_login_failed, dispatch_uid="portal_sign_in_failed")
def _sign_in_failed(sender, credentials, request=None, **kwargs):
    # The SSO callback audits its own failures, with their reasons. An attempt the sign-in
    # throttle refused (throttle.py) is not an event: its lockout was audited once.
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
    chain.record_request(request, AuditEvent.Action.AUTH_SIGNED_OUT, actor=user)
