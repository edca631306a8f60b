"""Sign-in and sign-out pages: the password form (with "Sign in with <provider>"), the start of
single sign-on's code flow, the provider's callback, and sign-out. Every way a single sign-on can
fail is audited with its reason and answered with the sign-in page, never a redirect loop."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import requests
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST
from django.views.generic import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from portal.audit import bounds, chain
from portal.audit.models import AuditEvent

from .failures import AGAIN, Failure, provider_failed
from .oidc import DiscoveryError, enabled, oidc_setting, provider_name
from .signals import ANONYMOUS

logger = logging.getLogger(__name__)

REAUTH_STATES = "portal_oidc_reauth"  # session key: state -> max_age, for sign-ins that must be fresh


# --- The sign-in page -----------------------------------------------------------------------------
def safe_next_url(request) -> str:
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
            return redirect(sso_url(safe_next_url(request), reauth=request.GET.get("reauth") == "1"))
        return super().dispatch(request, *args, **kwargs)

    def get_redirect_url(self):
        """`next`, unless it leads back to this page: a signed-in person would be sent round and
        round (Django refuses that with an error), so they go home instead."""
        url = super().get_redirect_url()
        return "" if url and urlsplit(url).path == self.request.path else url

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        return {**context, **login_context(self.request, self.get_redirect_url())}


@require_POST
def logout(request):
    """Sign out, and ask the browser to drop anything it kept of this site."""
    response = auth_views.LogoutView.as_view()(request)
    response["Clear-Site-Data"] = '"cache", "storage"'
    return response


# --- Single sign-on -------------------------------------------------------------------------------
_NOISE_KINDS = ("bad state", "provider error", "code refused")


def render_failure(request, failure: Failure):
    """The sign-in page with the failure's message, and its audit event."""
    actor = request.user if request.user.is_authenticated else ANONYMOUS
    action, detail = AuditEvent.Action.AUTH_SIGN_IN_FAILED, f"{provider_name()}: {failure.reason}"
    # Anyone can send these without signing in (a bad state needs nothing; a provider's `?error=`
    # answer or a made-up code only a state of their own, which /oidc/authenticate/ hands out):
    # bounded per address, each kind on its own. The rest are always recorded.
    kind = next((k for k in _NOISE_KINDS if failure.reason.startswith(k)), None)
    if kind:
        source_ip = chain.client_ip(request)
        bounds.record_noise(action, failure.outcome, kind=kind, actor=actor, source_ip=source_ip, detail=detail)
    else:
        chain.record_request(request, action, failure.outcome, actor=actor, detail=detail)
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
            failure = Failure(f"provider unavailable: {exc}", message, 503, AuditEvent.Outcome.FAILURE)
            return render_failure(request, failure)
        if self._reauth(request):
            state = parse_qs(urlsplit(response.url).query)["state"][0]
            pending = request.session.get(REAUTH_STATES) or {}
            pending = dict(list(pending.items())[-9:])  # a few parallel tabs at most
            pending[state] = settings.PORTAL_MINT_REAUTH_SECONDS
            request.session[REAUTH_STATES] = pending
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


def _url(exc: requests.RequestException) -> str:
    request = getattr(exc, "request", None)
    return (getattr(request, "url", None) or "").split("?")[0]


@method_decorator(never_cache, name="dispatch")
class CallbackView(OIDCAuthenticationCallbackView):
    """The provider sends the person back here with a code (or an error)."""

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
            message = f"{provider_name()} did not sign you in ({error}). " + AGAIN
            return render_failure(request, Failure(reason, message, 403))
        if not known or "code" not in request.GET:
            why = "no state" if not state else "unknown or already used" if not known else "no code"
            message = "That sign-in link has expired or was already used. " + AGAIN
            return render_failure(request, Failure(f"bad state: {why}", message, 400))
        pending = request.session.get(REAUTH_STATES) or {}
        request.portal_sso_max_age = pending.pop(state, None)
        request.session[REAUTH_STATES] = pending
        try:
            return super().get(request)
        except DiscoveryError as exc:
            failure = Failure(f"provider unavailable: {exc}", provider_failed(), 503, AuditEvent.Outcome.FAILURE)
        except requests.RequestException as exc:  # token, JWKS or userinfo request
            status = getattr(exc.response, "status_code", None)
            if status == 400 and _url(exc) == oidc_setting("OIDC_OP_TOKEN_ENDPOINT"):
                # The provider refused the code this browser brought (invalid_grant): a state is
                # free from /oidc/authenticate/, so this is junk anyone can send. Bounded.
                message = "That sign-in link has expired or was already used. " + AGAIN
                failure = Failure("code refused by the provider's token endpoint (HTTP 400)", message, 400)
            else:  # the provider or the network failing, or a misconfiguration (401 invalid_client)
                reason = f"token exchange failed: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
                failure = Failure(reason, provider_failed(), 502, AuditEvent.Outcome.FAILURE)
        except (SuspiciousOperation, jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            # Nonce, signature, algorithm, audience, issuer, expiry, or a malformed answer.
            failure = Failure(f"ID token rejected: {exc}", provider_failed(), 502, AuditEvent.Outcome.FAILURE)
        return render_failure(request, failure)

    def login_failure(self):
        default = Failure("sign-in refused", provider_failed(), 403)
        return render_failure(self.request, getattr(self.request, "portal_sso_failure", None) or default)

    def login_success(self):
        # Always a real login (sign-in time and audit event), even when the same person signs in
        # again to renew their session for minting.
        next_url = self.request.session.get("oidc_login_next")
        auth.login(self.request, self.user)
        return HttpResponseRedirect(next_url or resolve_url(settings.LOGIN_REDIRECT_URL))


sign_in = login_not_required(SignInView.as_view())
callback = login_not_required(CallbackView.as_view())
