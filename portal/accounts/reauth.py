"""A recent sign-in before minting: `require_recent_sign_in` lets a view run only for a sign-in
within PORTAL_MINT_REAUTH_SECONDS; otherwise the person signs in again and comes back, through
the provider (`max_age`, OIDC_REAUTH_PROMPT) or, for break-glass, the password form."""

from __future__ import annotations

import time
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseClientRedirect

from .oidc import enabled
from .signals import SIGN_IN_METHOD, SIGNED_IN_AT
from .views import sso_url


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
        response = HttpResponseClientRedirect(url) if getattr(request, "htmx", False) else redirect(url)
        patch_vary_headers(response, ["HX-Request"])  # the answer depends on it
        return response

    return guarded
