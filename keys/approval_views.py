"""Approval requests (asking for more than one's policy) and the onboarding links page."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.core.paginator import Paginator
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from portal.accounts.permissions import portal_admin_required
from portal.audit import bounds, chain
from portal.audit.models import AuditEvent
from portal.htmx import render_htmx

from . import policy
from .forms import ApprovalRequestForm, DecisionForm
from .models import ApprovalRequest, OnboardingTemplate
from .onboarding import safe_return_url
from .refusals import asked_values, record_refused_approval_request, refuse_request_for_more, too_many_refusals
from .views import refused_unexamined

Action, Outcome = AuditEvent.Action, AuditEvent.Outcome
log = logging.getLogger(__name__)
PENDING_PER_PAGE = 20


def audit_approval(request, approval: ApprovalRequest, action: str, outcome: str, detail: str) -> None:
    """One event about `approval`, by the person making this request, with the values asked for."""
    values = {"monthly_limit": approval.monthly_limit, "manage": approval.manage, "completions": approval.completions}
    chain.record_request(
        request, action, outcome, key_name=approval.name, detail=f"approval #{approval.pk}{detail}", **values
    )


@require_POST
def approval_request(request):
    if bounds.refusals_exceeded(request.user):
        return refused_unexamined(request)
    form = ApprovalRequestForm(request.POST, user=request.user)
    if not form.is_valid():  # answered where the form was, as the mint form's answers are
        if form.denials:  # forged values (`manage=write` without the right, `completions=admin`)
            record_refused_approval_request(request, "; ".join(form.denials), **asked_values(form))
        return render_htmx(request, "keys/new.html", "mint", {"form": None, "approval_form": form})
    data = form.cleaned_data
    with transaction.atomic():
        if message := policy.pending_approvals_full(request.user):
            approval = None
        else:
            approval = ApprovalRequest.objects.create(
                requester=request.user,
                name=data["name"],
                monthly_limit=data["monthly_limit"],
                manage=data["manage"],
                completions=data["completions"],
                reason=data["reason"],
                onboarding_template=OnboardingTemplate.objects.filter(slug=data["template"]).first()
                if data["template"]
                else None,
            )
            audit_approval(request, approval, Action.APPROVAL_REQUESTED, Outcome.PENDING, f": {data['reason']}")
    if approval is None:
        refuse_request_for_more(request, form, message, **asked_values(form))
        return render_htmx(request, "keys/new.html", "mint", {"form": None, "approval_form": form})
    return render_htmx(request, "keys/new.html", "mint", {"form": None, "approval_sent": approval})


@require_GET
@portal_admin_required
def approvals(request):
    pending = (
        ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING)
        .select_related("requester", "key")
        .order_by("created_at", "pk")
    )
    # get_page: a page number that is not one (`x`, `²`, `-1`) shows the first page, one past
    # the end the last; never an error.
    page = Paginator(pending, PENDING_PER_PAGE).get_page(request.GET.get("page"))
    decided = ApprovalRequest.objects.exclude(status=ApprovalRequest.Status.PENDING).select_related(
        "requester", "decided_by"
    )[:50]
    context = {"pending": page.object_list, "page": page, "decided": decided, "decide_form": DecisionForm()}
    return render(request, "keys/approvals.html", context)


@require_POST
@portal_admin_required
def approval_decide(request, pk: int):
    approval = get_object_or_404(ApprovalRequest, pk=pk)
    if bounds.refusals_exceeded(request.user):  # e.g. deciding one's own request, over and over
        refused = too_many_refusals(request)
        context = {"pending": [], "decided": [], "decide_form": DecisionForm(), "error": refused.message}
        return refused.answer(render(request, "keys/approvals.html", context, status=429))
    if approval.requester_id == request.user.pk:
        detail = ": nobody may decide their own request"
        audit_approval(request, approval, Action.APPROVAL_REFUSED, Outcome.DENIED, detail)
        raise PermissionDenied("You cannot decide your own request.")
    form = DecisionForm(request.POST)
    if not form.is_valid():
        context = {"pending": [approval], "decided": [], "decide_form": form, "error": "Choose approve or deny."}
        return render(request, "keys/approvals.html", context, status=400)
    with transaction.atomic():
        approval = ApprovalRequest.objects.select_for_update().get(pk=pk)
        if approval.status != ApprovalRequest.Status.PENDING:
            context = {
                "pending": [],
                "decided": [approval],
                "decide_form": form,
                "error": "This request was already decided.",
            }
            return render(request, "keys/approvals.html", context, status=409)
        approved = form.cleaned_data["decision"] == "approve"
        approval.decide(approved, by=request.user, comment=form.cleaned_data["comment"])
        action = Action.APPROVAL_APPROVED if approved else Action.APPROVAL_DENIED
        detail = f" for {approval.requester.get_username()}: {approval.comment}"
        audit_approval(request, approval, action, Outcome.SUCCESS, detail)
    _notify(request, approval)
    return redirect("approvals")


def _notify(request, approval: ApprovalRequest) -> None:
    """Tell the requester. The e-mail carries the decision and a link, never a key."""
    if not approval.requester.email:
        return
    if approval.status == ApprovalRequest.Status.APPROVED and approval.kind == ApprovalRequest.Kind.EXPIRY:
        link = request.build_absolute_uri(reverse("keys:detail", args=[approval.key_id]) + "#expiry")
        until = "never" if approval.key_expires_at is None else f"{approval.key_expires_at:%Y-%m-%d %H:%M} UTC"
        body = (
            f"Your request to extend the key “{approval.name}” to {until} was approved by "
            f"{approval.decided_by.get_username()}.\n\nApply it on the key's page before "
            f"{approval.expires_at:%Y-%m-%d %H:%M} UTC:\n{link}\n"
        )
    elif approval.status == ApprovalRequest.Status.APPROVED and approval.kind == ApprovalRequest.Kind.LIMIT:
        link = request.build_absolute_uri(reverse("keys:detail", args=[approval.key_id]))
        body = (
            f"Your request for a monthly limit of ${approval.monthly_limit} on the key “{approval.name}” was "
            f"approved by {approval.decided_by.get_username()}.\n\nApply it on the key's page before "
            f"{approval.expires_at:%Y-%m-%d %H:%M} UTC:\n{link}\n"
        )
    elif approval.status == ApprovalRequest.Status.APPROVED:
        link = request.build_absolute_uri(reverse("keys:new") + f"?approval={approval.pk}")
        body = (
            f"Your request for the key “{approval.name}” (monthly limit ${approval.monthly_limit}, "
            f"manage {approval.manage}, completions {approval.completions}) was approved by "
            f"{approval.decided_by.get_username()}.\n\nCreate it here before "
            f"{approval.expires_at:%Y-%m-%d %H:%M} UTC (it is shown to you once):\n{link}\n"
        )
    else:
        body = f"Your request for the key “{approval.name}” was denied by {approval.decided_by.get_username()}.\n"
    if approval.comment:
        body += f"\nComment: {approval.comment}\n"
    subject = f"Your Requesty key request was {approval.status}"
    try:
        send_mail(subject, body, None, [approval.requester.email])
    except OSError:  # SMTP trouble must not undo a recorded decision; the keys page shows it too
        log.exception("Could not e-mail the decision on approval #%s", approval.pk)


@require_GET
@portal_admin_required
def onboarding_links(request):
    """Every onboarding template with its link, ready to copy into onboarding material."""
    base = request.build_absolute_uri(reverse("keys:new"))
    rows = [
        {
            "template": t,
            "link": f"{base}?template={t.slug}",
            "return_ok": bool(t.return_url and safe_return_url(t.return_url)),
        }
        for t in OnboardingTemplate.objects.all()
    ]
    return render(request, "keys/onboarding.html", {"rows": rows, "allowed_hosts": settings.ONBOARDING_RETURN_HOSTS})
