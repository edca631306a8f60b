"""The key page's expiry and rotation: extend (within the policy, or as an admin approved), ask
for a later expiry, rotate. Each answers with the page's `expiry` partial for htmx, else the page."""

from __future__ import annotations

from django.db import transaction
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from portal.accounts.reauth import require_recent_sign_in
from portal.audit import bounds, chain
from portal.audit.models import AuditEvent
from portal.htmx import render_htmx
from portal.inputs import parse_id

from . import expiry, lifecycle, policy, rotation
from .expiry_fields import ExtendForm
from .forms import read_nonce
from .key_page import key_page
from .listing import key_or_404
from .minting import MintError
from .models import ApprovalRequest, IssuedKey
from .refusals import refuse_request_for_more, too_many_refusals

Action, Outcome, Status, Kind = AuditEvent.Action, AuditEvent.Outcome, IssuedKey.Status, ApprovalRequest.Kind


def _refused_unexamined(request, key: IssuedKey):
    """Past the per-person bound of refusals (portal/audit/bounds.py, issue 16 item 3): say so,
    examine nothing, append nothing more."""
    refused = too_many_refusals(request)
    return refused.answer(key_page(request, key, status=429, extend_error=refused.message))


@require_POST
def key_extend(request, pk: int):
    key = key_or_404(request, pk)
    if bounds.refusals_exceeded(request.user):
        return _refused_unexamined(request, key)
    approval_id = request.POST.get("approval", "")
    form = None if approval_id else ExtendForm(request.POST, key=key, user=request.user)
    extra = {}
    if form is not None and not form.is_valid():
        return key_page(request, key, extend_form=form)
    try:
        if form is not None:
            expiry.extend(key, form.cleaned_data["expires_at"], actor=request.user, source_ip=chain.client_ip(request))
        else:
            approval = ApprovalRequest.objects.filter(
                pk=parse_id(approval_id) or 0, requester=request.user, key=key, kind=Kind.EXPIRY
            ).first()
            if approval is None:
                raise lifecycle.LifecycleError("That approval cannot be used (not yours, or for another key).", 403)
            ip = chain.client_ip(request)
            expiry.extend(key, approval.key_expires_at, actor=request.user, source_ip=ip, approval=approval)
        extra["extended"] = True
    except lifecycle.LifecycleError as exc:
        extra["extend_error"] = exc.message
        if form is not None:
            extra["extend_form"] = form
            # Beyond the policy (not a mistake): the owner may ask an admin, with these values.
            if exc.status == 403 and form.beyond and key.owner_id == request.user.pk:
                extra["ask_form"] = form
    return key_page(request, key, **extra)


@require_POST
def key_extend_request(request, pk: int):
    """Ask an admin for a later expiry than the policy allows (ApprovalRequest, kind EXPIRY)."""
    key = key_or_404(request, pk, own=True)
    if bounds.refusals_exceeded(request.user):
        return _refused_unexamined(request, key)
    if key.status != Status.ACTIVE or key.expires_at is None:
        return key_page(request, key, extend_error="Only an active key with an expiry can be extended.")
    form = ExtendForm(request.POST, key=key, user=request.user, asking=True)
    if not form.is_valid():
        return key_page(request, key, ask_form=form)
    new = form.cleaned_data["expires_at"]
    with transaction.atomic():
        if message := policy.pending_approvals_full(request.user):
            refuse_request_for_more(request, form, message, issuance=key.issuance)
            return key_page(request, key, ask_form=form)
        approval = ApprovalRequest.objects.create(
            kind=Kind.EXPIRY,
            key=key,
            requester=request.user,
            name=key.name,
            monthly_limit=key.monthly_limit,
            manage=key.manage,
            completions=key.completions,
            reason=form.cleaned_data["reason"].strip(),
            key_expires_at=new,
        )
        chain.record_request(
            request,
            Action.APPROVAL_REQUESTED,
            Outcome.PENDING,
            issuance=key.issuance,
            detail=f"approval #{approval.pk}: expiry {expiry.describe(key.expires_at)} -> {expiry.describe(new)}: "
            f"{approval.reason}",
        )
    return key_page(request, key, approval_sent=approval)


@never_cache
@require_POST
@require_recent_sign_in
@sensitive_variables()
def key_rotate(request, pk: int):
    """Mint the replacement (its secret shown once, as on the create page) and schedule the old
    key's end; on any failure the key page says why, and the old key is unchanged."""
    key = key_or_404(request, pk, own=True)
    nonce = read_nonce(request.POST.get("nonce", ""), request.user)
    grace = request.POST.get("grace", "")
    offered = {str(h): h for h, _ in rotation.grace_choices()}
    if nonce is None or grace not in offered:
        problem = "This form has expired. Reload the page." if nonce is None else "Choose when the old key ends."
        return key_page(request, key, rotate_error=problem)
    try:
        minted, ends = rotation.rotate(
            key, actor=request.user, nonce=nonce, grace_hours=offered[grace], source_ip=chain.client_ip(request)
        )
    except MintError as exc:
        response = key_page(request, key, status=exc.status, rotate_error=exc.message)
        if exc.retry_after:
            response["Retry-After"] = str(exc.retry_after)
        return response
    context = {"minted": minted, "rotated": {"old": key, "ends": ends, "now": offered[grace] == 0}}
    return render_htmx(request, "keys/new.html", "mint", context)
