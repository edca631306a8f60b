"""Views coordinate: forms validate, `minting.mint_key` does the work, templates show it."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from . import audit, policy
from .forms import KeyRequestForm, new_nonce, prefill
from .minting import MintError, mint_key
from .models import AuditEvent

TEMPLATE = "keys/new.html"


@require_GET
def home(request):
    return render(request, "keys/home.html", {"is_admin": policy.is_portal_admin(request.user)})


@never_cache
@vary_on_headers("HX-Request")
@require_http_methods(["GET", "POST"])
@sensitive_variables()
def new_key(request):
    """The stable onboarding URL: GET shows the form (prefilled from the link), POST mints."""
    if request.method == "GET":
        initial, notes = prefill(request.GET, request.user)
        form = KeyRequestForm(initial={**initial, "nonce": new_nonce(request.user)}, user=request.user)
        return _render(request, {"form": form, "notes": notes})

    form = KeyRequestForm(request.POST, user=request.user)
    if not form.is_valid():
        status = 200
        if form.denials:
            _audit_denial(request, form)
            status = 403
        return _render(request, {"form": form}, status=status)

    try:
        minted = mint_key(
            actor=request.user,
            cleaned=form.cleaned_data,
            nonce=form.cleaned_data["nonce"],
            source_ip=audit.client_ip(request),
        )
    except MintError as exc:
        retry_form = _fresh_form(request, form) if exc.kind in ("rejected", "failed", "unavailable") else None
        response = _render(request, {"form": retry_form, "error": exc}, status=exc.status)
        if exc.retry_after:
            response["Retry-After"] = str(exc.retry_after)
        return response
    return _render(request, {"minted": minted})


def _fresh_form(request, form: KeyRequestForm) -> KeyRequestForm | None:
    """After a definite "no", offer the same values again with a new nonce. (After an unknown
    outcome or a duplicate the view offers nothing to resubmit: nobody should retry blindly.)"""
    data = form.cleaned_data
    return KeyRequestForm(
        initial={
            **{k: data[k] for k in ("name", "monthly_limit", "manage", "completions")},
            "nonce": new_nonce(request.user),
        },
        user=request.user,
    )


def _render(request, context: dict, status: int = 200):
    is_partial = request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request
    template = f"{TEMPLATE}#mint" if is_partial else TEMPLATE
    context.setdefault("error", None)
    return render(request, template, context, status=status)


def _audit_denial(request, form: KeyRequestForm) -> None:
    data = form.data
    audit.record(
        AuditEvent.Action.MINT_DENIED,
        AuditEvent.Outcome.DENIED,
        actor=request.user,
        source_ip=audit.client_ip(request),
        key_name=str(data.get("name", ""))[:200],
        manage=str(data.get("manage", ""))[:16],
        completions=str(data.get("completions", ""))[:16],
        detail="; ".join(form.denials),
    )


@require_POST
def logout(request):
    """Sign out, and ask the browser to drop anything it kept of this site."""
    response = auth_views.LogoutView.as_view()(request)
    response["Clear-Site-Data"] = '"cache", "storage"'
    return response
