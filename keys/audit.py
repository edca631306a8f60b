"""Appending audit events. Every state change of an issuance and every refusal goes through here."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from .models import AuditEvent, Issuance

Action = AuditEvent.Action
Outcome = AuditEvent.Outcome


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the address the trusted proxies saw (PORTAL_TRUSTED_PROXY_HOPS)."""
    hops = settings.PORTAL_TRUSTED_PROXY_HOPS
    if hops > 0:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR") or None


def record(
    action: str,
    outcome: str,
    *,
    actor=None,
    issuance: Issuance | None = None,
    source_ip: str | None = None,
    upstream_status: int | None = None,
    detail: str = "",
    **values,
) -> AuditEvent:
    """Append one event. With an issuance, the key's name, limit and permissions come from it;
    otherwise pass key_name / monthly_limit / manage / completions / api_key_id as keywords."""
    if issuance is not None:
        values = {
            "key_name": issuance.name,
            "api_key_id": issuance.api_key_id,
            "monthly_limit": issuance.monthly_limit,
            "manage": issuance.manage,
            "completions": issuance.completions,
            **values,
        }
        actor = actor if actor is not None else issuance.actor
        source_ip = source_ip or issuance.source_ip
    return AuditEvent.objects.create(
        action=action,
        outcome=outcome,
        actor=actor,
        actor_username=getattr(actor, "username", "") or "",
        actor_email=getattr(actor, "email", "") or "",
        issuance=issuance,
        source_ip=source_ip,
        upstream_status=upstream_status,
        detail=detail[:500],
        **values,
    )
