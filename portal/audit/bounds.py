"""Bounds on the audit events anyone can cause at will (invariant I7): junk from outside (bad SSO
answers, unknown usernames) per client address, and a person's refused requests (mints, limit
changes, approval requests). Every append waits
for the chain's lock that every mint needs, so unbounded junk could slow all mints and fill the log.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .chain import Action, Outcome, parse_ip, record
from .models import AuditEvent

log = logging.getLogger(__name__)

_NOTE = "[bound reached]"
# What a signed-in person can have refused at will, as often as they like; counted together.
_REFUSALS = Q(
    action__in=(Action.MINT_DENIED, Action.MINT_RATE_LIMITED, Action.MINT_DUPLICATE, Action.APPROVAL_REFUSED)
) | Q(action__in=(Action.KEY_LIMIT_FAILED, Action.KEY_EXPIRY_FAILED), outcome=Outcome.DENIED)


def _recent(**filters):
    return AuditEvent.objects.filter(created_at__gte=timezone.now() - timedelta(hours=1), **filters)


def record_noise(action: str, outcome: str, *, kind: str, actor, source_ip: str | None, detail: str, **values):
    """`record` for junk anyone can send without signing in (a single sign-on answer with an unknown
    state or a provider's error, a password for a username that does not exist): at most
    PORTAL_AUDIT_REFUSALS_PER_HOUR events of this `kind` per client address in a rolling hour, plus
    one that says the bound was reached; later ones are logged only. Every append waits for the
    chain's lock that every mint needs, so unbounded junk could slow all mints and fill the log.
    The detail starts with "[kind]", and each kind is counted on its own, so junk of one kind never
    fills another's bound; events about real accounts are never bounded (callers use `record`).
    Requests without a usable address share one bound. Counted in the database (across workers
    and instances) by a read that never waits for the lock. Returns the event, or None."""
    address, tag = parse_ip(source_ip), f"[{kind}]"
    limit = settings.PORTAL_AUDIT_REFUSALS_PER_HOUR
    recent = _recent(action=action, source_ip=address, detail__startswith=tag)
    text = f"{tag} {detail}"
    if recent[:limit].count() >= limit:
        if recent.filter(detail__startswith=f"{tag} {_NOTE}").exists():
            log.warning(
                "Audit bound reached: event logged only",
                extra={"action": action, "kind": kind, "source_ip": address, "detail": detail[:500]},
            )
            return None
        where = f"from {address}" if address else "without a usable client address"
        text = f"{tag} {_NOTE} {limit} such events {where} within an hour; further ones are logged only. {detail}"
    return record(action, outcome, actor=actor, source_ip=address, detail=text, **values)


def refusals_exceeded(user) -> bool:
    """Has this user been refused PORTAL_AUDIT_REFUSALS_PER_HOUR requests (mints, limit changes,
    approval requests) in the last hour? Then those forms refuse their POSTs without looking at
    them (keys/views.py, keys/approval_views.py), so a script cannot append refusal after refusal
    to the chain, and every refusal before that point is audited in full (a forged value
    included, threat 8). The note saying so is not a refusal."""
    limit = settings.PORTAL_AUDIT_REFUSALS_PER_HOUR
    return _refusals(user).order_by()[:limit].count() >= limit  # at most `limit` rows: this runs on every mint POST


def refusal_keeping_the_bound(user):
    """The refusal whose leaving the hour brings the user below the bound again (its time), or None."""
    limit = settings.PORTAL_AUDIT_REFUSALS_PER_HOUR
    newest_first = _refusals(user).order_by("-created_at").values_list("created_at", flat=True)
    return next(iter(newest_first[limit - 1 : limit]), None)


def _refusals(user):
    """The user's refusals in the last hour; the note saying the bound was reached is not one."""
    return _recent(actor_id=user.pk).filter(_REFUSALS).exclude(detail__startswith=_NOTE)


def record_refusals_exceeded(user, source_ip: str | None) -> None:
    """Once per hour of refusals (a race may add a second): the event saying POSTs are now refused
    unexamined. Every refused POST is also logged."""
    address = parse_ip(source_ip)
    log.warning("Request refused unexamined: too many refusals", extra={"user": user.username, "source_ip": address})
    if _recent(action=Action.MINT_RATE_LIMITED, actor_id=user.pk, detail__startswith=_NOTE).exists():
        return
    limit = settings.PORTAL_AUDIT_REFUSALS_PER_HOUR
    record(
        Action.MINT_RATE_LIMITED,
        Outcome.DENIED,
        actor=user,
        source_ip=address,
        detail=f"{_NOTE} {limit} refused requests within an hour: further key, limit and approval requests "
        "are refused without being examined until the hour has room again; each is logged.",
    )
