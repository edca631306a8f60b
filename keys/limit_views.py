"""A key's monthly limit on its page: changing it within the policy, asking an admin for more
(ApprovalRequest.kind LIMIT), and applying exactly what an admin approved."""

from __future__ import annotations

from django.core.exceptions import BadRequest
from django.db import transaction
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from portal.audit import bounds, chain
from portal.audit.models import AuditEvent
from portal.htmx import render_htmx, wants_partial
from portal.inputs import parse_id

from . import lifecycle, policy
from .approval_views import audit_approval
from .forms import LimitApprovalForm, LimitForm
from .key_page import key_page, limit_context
from .listing import key_or_404
from .models import ApprovalRequest, IssuedKey
from .refusals import refuse_request_for_more, too_many_refusals

Action, Outcome = AuditEvent.Action, AuditEvent.Outcome


def _answer(request, key: IssuedKey, status: int = 200, **context):
    """The key page's limit section for htmx; without htmx the whole key page (every section)."""
    if not wants_partial(request):
        return key_page(request, key, status=status, **context)
    return render_htmx(request, "keys/detail.html", "limit", limit_context(request, key, **context), status=status)


def _refused_unexamined(request, key: IssuedKey):
    """Past the per-person bound of refusals (portal/audit/bounds.py): say so, examine nothing."""
    refused = too_many_refusals(request)
    return refused.answer(_answer(request, key, status=429, limit_error=refused.message))


@require_POST
def key_limit(request, pk: int):
    """A new limit: within the policy, or exactly what an admin approved (`approval`)."""
    key = key_or_404(request, pk)
    if bounds.refusals_exceeded(request.user):
        return _refused_unexamined(request, key)
    approval = None
    if "approval" in request.POST:
        approval_id = parse_id(request.POST["approval"])
        approval = (
            approval_id
            and ApprovalRequest.objects.filter(
                pk=approval_id, requester=request.user, key=key, kind=ApprovalRequest.Kind.LIMIT
            ).first()
        )
        if not approval:
            raise BadRequest("Not an approval of a limit for this key.")
    data = {"monthly_limit": str(approval.monthly_limit)} if approval else request.POST
    form = LimitForm(data, key=key, user=request.user, approved=approval is not None)
    context = {"limit_form": form, "limit_error": "", "limit_changed": False}
    status = 200
    if form.is_valid():
        try:
            lifecycle.change_limit(
                key,
                form.cleaned_data["monthly_limit"],
                actor=request.user,
                source_ip=chain.client_ip(request),
                approval_id=approval.pk if approval else None,
            )
            context["limit_changed"] = True
            context["limit_form"] = LimitForm(key=key, user=request.user)
        except lifecycle.LifecycleError as exc:
            context["limit_error"] = exc.message
            status = 429 if exc.status == 429 else status
    elif form.denials:
        chain.record_request(
            request,
            Action.KEY_LIMIT_FAILED,
            Outcome.DENIED,
            issuance=key.issuance,
            api_key_id=key.api_key_id,
            monthly_limit=None,
            detail="; ".join(form.denials),
        )
        if form.beyond is not None and key.owner_id == request.user.pk:
            context["limit_offer"] = LimitApprovalForm(initial={"monthly_limit": form.beyond})
    return _answer(request, key, status, **context)


@require_POST
def limit_approval_request(request, pk: int):
    """Ask for a higher limit on one's own active key than the policy allows (kind LIMIT): an admin
    approves it, then the owner applies it on the key's page (keys.views.key_limit)."""
    key = get_object_or_404(IssuedKey, pk=pk, owner=request.user, status=IssuedKey.Status.ACTIVE)
    if bounds.refusals_exceeded(request.user):
        return _refused_unexamined(request, key)
    form = LimitApprovalForm(request.POST)
    if not form.is_valid():
        return _answer(request, key, limit_offer=form)
    with transaction.atomic():
        if message := policy.pending_approvals_full(request.user):
            limit = form.cleaned_data["monthly_limit"]
            refuse_request_for_more(request, form, message, issuance=key.issuance, monthly_limit=limit)
            return _answer(request, key, limit_offer=form)
        approval = ApprovalRequest.objects.create(
            kind=ApprovalRequest.Kind.LIMIT,
            key=key,
            requester=request.user,
            name=key.name,
            monthly_limit=form.cleaned_data["monthly_limit"],
            manage=key.manage,
            completions=key.completions,
            reason=form.cleaned_data["reason"],
        )
        reason = f": {form.cleaned_data['reason']}"
        audit_approval(request, approval, Action.APPROVAL_REQUESTED, Outcome.PENDING, reason)
    return _answer(request, key)
