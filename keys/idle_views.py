"""The idle-key e-mail's Keep link (keys/idle.py): the owner (or an admin) says the key is still needed."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from portal.audit import chain
from portal.audit.models import AuditEvent

from .listing import key_or_404
from .models import IssuedKey


@require_http_methods(["GET", "POST"])
def key_keep(request, pk: int):
    """The idle e-mail's Keep link: GET asks (mail scanners follow links), POST keeps and resets the clock."""
    key = key_or_404(request, pk)
    context = {"key": key, "idle_days": settings.PORTAL_IDLE_DAYS}
    if request.method == "GET":
        return render(request, "keys/keep.html", context)
    if key.status != IssuedKey.Status.ACTIVE:
        chain.record_request(
            request, AuditEvent.Action.KEY_KEPT, AuditEvent.Outcome.DENIED, issuance=key.issuance, detail="not active"
        )
        return render(request, "keys/keep.html", context, status=409)
    with transaction.atomic():
        IssuedKey.objects.filter(pk=key.pk).update(kept_at=timezone.now(), idle_notified_at=None)
        chain.record_request(
            request,
            AuditEvent.Action.KEY_KEPT,
            issuance=key.issuance,
            detail="kept: still needed (resets the idle clock)",
        )
    messages.success(request, f"The key “{key.name}” is kept. You will be asked again if it stays unused.")
    return redirect("keys:detail", pk=key.pk)
