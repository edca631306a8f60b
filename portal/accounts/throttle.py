"""Password sign-in throttling, on top of django-axes (settings: `AXES_*` in portal/settings.py).

Axes counts failed password sign-ins per username *and* client address (`portal.audit.chain.client_ip`,
so a forged X-Forwarded-For changes nothing) in its own table, and refuses that pair for
PORTAL_SIGN_IN_LOCKOUT_MINUTES after PORTAL_SIGN_IN_FAILURE_LIMIT failures in a row. This module
adds what the portal needs around it:

- only password attempts are counted or refused (single sign-on never is);
- a refused attempt never reaches the password hasher, adds no audit event (a flood of them
  must not queue on the audit chain's lock, which minting needs too) and is not recorded again
  (the cool-off runs from the failure that started it, so the page can say when it ends);
- the lockout itself is audited once, as an `auth.sign_in_failed` event that says so;
- the answer is the sign-in page with status 429 and an alert saying when to try again, the
  same whether or not the username exists.
"""

from __future__ import annotations

import math

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off
from axes.signals import user_locked_out
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Max
from django.dispatch import receiver
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.debug import sensitive_variables

from .signals import record_password_failure, username_exists
from .views import login_context, safe_next_url

BLOCKED = "portal_sign_in_blocked"  # request attribute: axes refused this attempt before any backend ran


def blocked(request) -> bool:
    return bool(getattr(request, BLOCKED, False))


def not_a_password_attempt(request, credentials: dict | None) -> bool:
    """AXES_WHITELIST_CALLABLE: single sign-on (nonce and PKCE verifier, no password) is neither
    counted nor refused; its failures are the provider's business and audited by portal/accounts/views.py."""
    return "password" not in (credentials or {})


class PasswordThrottleBackend(AxesStandaloneBackend):
    """axes' gatekeeper, first in AUTHENTICATION_BACKENDS: a refused username and address pair
    stops `authenticate` before the password is even hashed. Returns None otherwise, so the
    portal's own backends decide."""

    # Every local hidden from error reports, here and below (the password).
    @sensitive_variables()
    def authenticate(self, request, username=None, password=None, **kwargs):
        if password is None:  # not a password form: single sign-on's callback
            return None
        try:
            return super().authenticate(request, username=username, password=password, **kwargs)
        except AxesBackendPermissionDenied:
            setattr(request, BLOCKED, True)
            raise


def locked_until(request, credentials: dict | None = None):
    """When the lockout of this request's username and address ends: the cool-off after the
    last failure axes recorded (refused attempts are not recorded, so this does not move)."""
    attempts = AxesProxyHandler.get_implementation().get_user_attempts(request, credentials)
    last = max(
        (t for qs in attempts if (t := qs.aggregate(last=Max("attempt_time"))["last"]) is not None),
        default=getattr(request, "axes_attempt_time", None) or timezone.now(),
    )
    return last + get_cool_off(request)


def lockout_response(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the sign-in page, status 429, with an alert and Retry-After. It
    names neither the account nor whether it exists: unknown usernames are locked out alike."""
    until = locked_until(request, credentials)
    seconds = max(1, math.ceil((until - timezone.now()).total_seconds()))
    next_url = safe_next_url(request)
    context = {
        "form": AuthenticationForm(request),
        "next": next_url,
        **login_context(request, next_url),
        "locked_until": until,
        "locked_minutes": math.ceil(seconds / 60),
    }
    response = render(request, "accounts/login.html", context, status=429)
    response["Retry-After"] = str(seconds)
    add_never_cache_headers(response)
    return response


@receiver(user_locked_out, dispatch_uid="portal_sign_in_locked_out")
def _locked_out(sender, request=None, username=None, ip_address=None, **kwargs):
    """Audit the failure that started a lockout; axes signals every refused attempt as well."""
    if request is None or blocked(request):
        return
    credentials = getattr(request, "axes_credentials", None)
    until = locked_until(request, credentials)
    failures = getattr(request, "axes_failures_since_start", None)
    name = str(username if username is not None else get_client_username(request, credentials))
    known = username_exists(name)
    record_password_failure(
        known,
        source_ip=ip_address,
        detail=f"password sign-in locked out for {'username' if known else 'unknown username'} {name[:150]!r} "
        f"from this address after {failures} failures, until {until:%Y-%m-%d %H:%M:%S} UTC",
    )
