"""Views coordinate: forms validate, `minting.mint_key` does the work, templates show it."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import BadRequest
from django.db import DatabaseError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from portal.accounts.permissions import is_portal_admin
from portal.accounts.reauth import require_recent_sign_in
from portal.audit import bounds, chain
from portal.audit.models import AuditEvent
from portal.htmx import render_htmx, wants_partial
from portal.inputs import parse_id

from . import expiry_fields, lifecycle, listing, policy, reminders, requesty, usage
from .charts import usage_chart
from .forms import ApprovalRequestForm, KeyPageForm, KeyRequestForm, new_nonce
from .key_page import key_page
from .listing import key_or_404, visible_keys
from .minting import MintError, mint_key
from .models import ApprovalRequest, Issuance, IssuedKey, OnboardingTemplate
from .onboarding import prefill, safe_return_url
from .refusals import asked_values, too_many_refusals

TEMPLATE = "keys/new.html"


@require_GET
def home(request):
    return render(request, "keys/home.html", {"is_admin": is_portal_admin(request.user)})


@never_cache
@require_http_methods(["GET", "POST"])
@require_recent_sign_in
@sensitive_variables()
def new_key(request):
    """The stable onboarding URL: GET shows the form (prefilled from the link), POST mints."""
    if request.method == "GET":
        return _mint_page(request, _form_context(request))

    if bounds.refusals_exceeded(request.user):
        return refused_unexamined(request)
    form = KeyRequestForm(request.POST, user=request.user)
    if not form.is_valid():
        status = 200
        if form.denials or form.beyond:
            _audit_denial(request, form)
            status = 403
        approval_form = (
            ApprovalRequestForm(initial=form.requested_values(), user=request.user)
            if form.can_ask_for_approval
            else None
        )
        context = {"form": form, "approval_form": approval_form, **_budget_context(request.user, form)}
        return _mint_page(request, context, status=status)

    try:
        minted = mint_key(
            actor=request.user,
            cleaned=form.cleaned_data,
            nonce=form.cleaned_data["nonce"],
            source_ip=chain.client_ip(request),
            approval_id=form.cleaned_data.get("approval"),
        )
    except MintError as exc:
        retry = exc.kind in ("rejected", "failed", "unavailable", "beyond_policy")
        try:
            context = _form_context(request, values=form.cleaned_data) if retry else {"form": None}
        except DatabaseError:  # the database that failed the mint may still be down: say so, no form
            context = {"form": None}
        response = _mint_page(request, {**context, "error": exc}, status=exc.status)
        if exc.retry_after:
            response["Retry-After"] = str(exc.retry_after)
        return response
    try:
        continue_url = _continue_url(request, form.cleaned_data.get("template"))
    except DatabaseError:  # never lose the secret over an optional link
        continue_url = None
    context = {"minted": minted, "continue_url": continue_url, "gateway_url": settings.REQUESTY_GATEWAY_URL}
    return _mint_page(request, context)


def _form_context(request, values: dict | None = None) -> dict:
    """A fresh form (new nonce): from the values given (after a definite "no"), an approval
    (`?approval=<id>`), an onboarding template or link, or the defaults. After an unknown outcome
    or a duplicate the view offers no form at all: nobody should retry blindly."""
    user = request.user
    pol = policy.resolve(user)
    room = policy.headroom(user, pol)
    notes, approval_offer, approval = [], None, None
    if values is not None:
        keep = ("name", "monthly_limit", "manage", "completions", "approval", "template", "expires", "expires_on")
        initial = {k: values.get(k) for k in keep}
    elif "approval" in request.GET:
        approval_id = parse_id(request.GET["approval"])
        approval = (
            ApprovalRequest.objects.filter(pk=approval_id, requester=user, kind=ApprovalRequest.Kind.NEW_KEY).first()
            if approval_id
            else None
        )
        if approval is not None and approval.is_usable:
            initial = {k: getattr(approval, k) for k in ("name", "monthly_limit", "manage", "completions")}
            initial.update(expiry_fields.initial_for(expiry_fields.default_days(pol), timezone.now().date()))
            initial["approval"] = approval.pk
            if approval.onboarding_template is not None:
                initial["template"] = approval.onboarding_template.slug
        else:
            initial, notes, _ = prefill({}, user, pol, room)
            notes = ["That approval cannot be used (it was used, has expired, or is not yours)."]
            approval = None
    else:
        initial, notes, approval_values = prefill(request.GET, user, pol, room)
        if approval_values:
            approval_offer = ApprovalRequestForm(initial=approval_values, user=user, resolved=(pol, room))
    form = KeyRequestForm(initial={**initial, "nonce": new_nonce(user)}, user=user, resolved=(pol, room))
    context = {"form": form, "notes": notes, "approval_form": approval_offer, "approval": approval}
    return {**context, **_budget_context(user, form)}


def _budget_context(user, form) -> dict:
    """The budget meter above the form, after a mistake too; when nothing is left, which keys use it."""
    budget = policy.budget(form.policy, form.headroom)
    if budget is None:
        return {}
    cap = form.headroom.key_cap(form.policy)
    full = cap < form.policy.min_limit or form.headroom.keys_left == 0
    return {
        "budget": budget,
        "key_cap": cap,
        "keys_left": form.headroom.keys_left,
        "budget_keys": list(policy.budget_users(user)[:20]) if full else [],
    }


def _continue_url(request, slug: str | None) -> str | None:
    """The onboarding template's return URL, if its host is allowed; a refused one is audited."""
    template = OnboardingTemplate.objects.filter(slug=slug).first() if slug else None
    if template is None or not template.return_url:
        return None
    url = safe_return_url(template.return_url)
    if url is None:
        chain.record_request(
            request,
            AuditEvent.Action.ONBOARDING_RETURN_REFUSED,
            AuditEvent.Outcome.DENIED,
            detail=f"template {template.slug}: return URL {template.return_url!r} not in ONBOARDING_RETURN_HOSTS",
        )
    return url


def _mint_page(request, context: dict, status: int = 200):
    """The mint page, or its `mint` partial for htmx: every answer of /keys/new/."""
    return render_htmx(request, TEMPLATE, "mint", context, status=status)


def refused_unexamined(request):
    """Too many refusals this hour (bounds.refusals_exceeded): say so on the mint page, examine nothing."""
    refused = too_many_refusals(request)
    error = MintError("rate_limited", refused.message, 429, retry_after=refused.wait)
    return refused.answer(_mint_page(request, {"form": None, "error": error}, status=429))


def _audit_denial(request, form: KeyRequestForm) -> None:
    """A refused mint, with what it asked for as it was sent."""
    action, outcome = AuditEvent.Action.MINT_DENIED, AuditEvent.Outcome.DENIED
    chain.record_request(request, action, outcome, detail="; ".join(form.denials + form.beyond), **asked_values(form))


# --- Key lifecycle: my keys, spend, usage, limit, revoke -----------------------------------------
@require_GET
def key_list(request):
    """Everyone's keys for admins, one's own otherwise: filtered, paged, and counted (nothing silently cut)."""
    is_admin = is_portal_admin(request.user)
    form = KeyPageForm(request.GET)
    if not form.is_valid():
        raise BadRequest("Not a valid page of the key list.")
    visible = visible_keys(request.user)
    # The rows show no issuance, and the owner only to admins: no join (and no instances) for them.
    keys = visible.select_related("owner") if is_admin else visible.select_related(None)
    unknown = Issuance.objects.filter(state__in=[Issuance.State.UNKNOWN, Issuance.State.REQUESTED])
    owner, status = form.cleaned_data["owner"] if is_admin else "", form.cleaned_data["status"]
    if owner:
        keys, unknown = keys.filter(owner__username=owner), unknown.filter(actor__username=owner)
    if not is_admin:
        unknown = unknown.filter(actor=request.user)
    if status in IssuedKey.Status.values:
        keys, unknown = keys.filter(status=status), unknown.none()
    elif status == listing.REVOCATION_FAILED:
        keys, unknown = listing.failed_revocations(keys), unknown.none()
    elif status == "unknown":
        keys = keys.none()
    else:
        status = ""
    context = listing.key_page(keys, visible, form.cleaned_data, {"owner": owner, "status": status})
    context.update(listing.unsettled(unknown, context["first_page"]))
    context["org_usage"] = usage.attach(context["keys"])
    new_key = visible.filter(pk=form.cleaned_data["new"]).first() if form.cleaned_data["new"] else None
    listing.show(context["keys"], new_pk=new_key.pk if new_key else None)
    context.update(
        is_admin=is_admin,
        new_key=new_key,
        reconcile_minutes=settings.PORTAL_RECONCILE_MINUTES,
        owner=owner,
        status=status,
        statuses=[
            *IssuedKey.Status.choices,
            (listing.REVOCATION_FAILED, "active, revocation failed"),
            ("unknown", "outcome unknown"),
        ],
        approval_requests=ApprovalRequest.objects.filter(requester=request.user).select_related("decided_by")[:20],
        revocation_failed=listing.REVOCATION_FAILED,
    )
    context["revocation_failures"], context["revocation_total"] = listing.revocation_failures() if is_admin else ([], 0)
    context["expiring_soon"], context["expiring_total"] = reminders.expiring_soon(request.user, timezone.now())
    return render(request, "keys/list.html", context)


@require_GET
def key_spend(request, pk: int):
    """One row's spend: from the organization usage, or (only when that failed) from the key itself."""
    key = key_or_404(request, pk)
    context = {"key": key, "spend": None, "spend_error": ""}
    org = usage.org_usage()
    if org.ok:
        context["spend"] = lifecycle.Spend(org.key(key.api_key_id).month_spend, key.monthly_limit, org.fetched_at)
    elif key.status == IssuedKey.Status.ACTIVE:
        try:
            context["spend"] = lifecycle.current_spend(key)
        except lifecycle.LifecycleError as exc:
            context["spend_error"] = exc.message
        except (requesty.RequestyError, ValueError):  # ValueError: an id Requesty could not have issued
            context["spend_error"] = "Spend unavailable right now."
    return render_htmx(request, "keys/list.html", "spend", context, fragment_only=True)


@require_GET
def key_detail(request, pk: int):
    return key_page(request, key_or_404(request, pk))


@require_GET
def key_usage(request, pk: int):
    key = key_or_404(request, pk)
    chart, error = usage_chart(key, request.user)
    context = {"key": key, "chart": chart, "usage_error": error}
    return render_htmx(request, "keys/detail.html", "usage", context, fragment_only=True)


@vary_on_headers("HX-Request")  # every answer, the redirect and the error page included
@require_http_methods(["GET", "POST"])
def key_revoke(request, pk: int):
    """GET asks for confirmation naming the key; POST revokes it upstream, then here."""
    key = key_or_404(request, pk)
    if request.method == "GET":
        return render_htmx(request, "keys/revoke.html", "confirm", {"key": key, "in_row": wants_partial(request)})
    error = ""
    if key.status == IssuedKey.Status.ACTIVE:
        try:
            lifecycle.revoke(key, actor=request.user, source_ip=chain.client_ip(request))
        except lifecycle.LifecycleError as exc:
            error = exc.message
    if wants_partial(request):  # the list's row, swapped in place of the one that was asked about
        listing.show([key])
        context = {
            "org_usage": usage.attach([key]),
            "key": key,
            "row_error": error,
            "just_changed": not error,
            "is_admin": is_portal_admin(request.user),
        }
        return render_htmx(request, "keys/list.html", "row", context, fragment_only=True)
    if error:
        return render(request, "keys/revoke.html", {"key": key, "error": error}, status=502)
    gone = "It was already deleted in Requesty." if key.status == IssuedKey.Status.DELETED_UPSTREAM else ""
    messages.success(request, f"The key “{key.name}” is revoked. {gone}".strip())
    return redirect("keys:list")
