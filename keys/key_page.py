"""The key page (keys/detail.html): what each of its sections shows, and the page rendered whole or
as the `expiry` section for htmx. The views of each section (views.py, limit_views.py,
expiry_views.py) answer through here."""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import reverse

from portal.htmx import render_htmx

from . import listing, rotation, usage
from .expiry_fields import ExtendForm
from .forms import LimitForm, new_nonce
from .models import ApprovalRequest, IssuedKey

Status, Kind = IssuedKey.Status, ApprovalRequest.Kind


def key_page(request, key: IssuedKey, status: int = 200, **extra):
    """The key page, or its `expiry` section for htmx, with everything the section shows."""
    user = request.user
    own, active = key.owner_id == user.pk, key.status == Status.ACTIVE
    context = {
        "key": key,
        "extend_form": ExtendForm(key=key, user=user) if active and key.expires_at else None,
        "grace_choices": rotation.grace_choices() if own and active else None,
        "rotate_nonce": new_nonce(user) if own and active else "",
        "replaces": key.issuance.rotates,
        "replaced_by": IssuedKey.objects.filter(issuance__rotates=key).first(),
        "expiry_approvals": [
            a
            for a in ApprovalRequest.objects.filter(key=key, kind=Kind.EXPIRY, requester=user)[:5]
            if a.status == ApprovalRequest.Status.PENDING or a.is_usable
        ],
        "replacement_url": _replacement_url(key) if own and key.status == Status.EXPIRED else "",
        "org_usage": usage.attach([key]),
        **limit_context(request, key),
        **extra,
    }
    return render_htmx(request, "keys/detail.html", "expiry", context, status=status)


def limit_context(request, key: IssuedKey, **extra) -> dict:
    """The key page's limit section: the form, and for the owner an approved raise to apply or a
    request still waiting (ApprovalRequest.kind LIMIT)."""
    # The links of the list's spend cell, which the whole page shows too (keys/_usage_details.html):
    # here, so that every view answering with the whole page (a limit change without htmx) has them.
    listing.show([key])
    context = {"key": key, "limit_form": LimitForm(key=key, user=request.user), **extra}
    if key.owner_id == request.user.pk and key.status == IssuedKey.Status.ACTIVE:
        asked = ApprovalRequest.objects.filter(requester=request.user, key=key, kind=ApprovalRequest.Kind.LIMIT)
        approved = asked.filter(status=ApprovalRequest.Status.APPROVED).select_related("decided_by").first()
        context["limit_approval"] = approved if approved is not None and approved.is_usable else None
        context["limit_request_pending"] = asked.filter(status=ApprovalRequest.Status.PENDING).first()
    return context


def _replacement_url(key: IssuedKey) -> str:
    """The create form, prefilled like an onboarding link with the old key's settings (its
    lifetime again; the form clamps it to today's policy)."""
    days = "never" if key.expires_at is None else str(max(1, round((key.expires_at - key.created_at).days)))
    query = {"name": key.name, "monthly_limit": key.monthly_limit, "completions": key.completions, "expires": days}
    return f"{reverse('keys:new')}?{urlencode(query)}"
