"""Rotation: a replacement with the old key's name, limit, permissions and (re-clamped) lifetime,
minted through the same issuance state machine (keys/minting.py), and the old key set to end after
a grace period the person picks.

The old key is changed only once the replacement is issued: if the create is refused, fails or
its outcome is unknown, the old key keeps working exactly as before. The replacement's issuance
names the old key (`Issuance.rotates`), which links the two on both key pages, and the audit log
says it on both keys (`key.rotated`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from portal.audit.models import AuditEvent

from . import expiry, lifecycle, policy
from .minting import Minted, MintError, mint_key
from .models import IssuedKey

Action, Outcome = AuditEvent.Action, AuditEvent.Outcome
MAX_GRACE_HOURS = 7 * 24


def grace_choices() -> list[tuple[int, str]]:
    """Now, one hour, or PORTAL_ROTATION_GRACE_HOURS (at most 7 days)."""
    hours = min(settings.PORTAL_ROTATION_GRACE_HOURS, MAX_GRACE_HOURS)
    options = [(0, "now"), (1, "in 1 hour")]
    if hours > 1:
        options.append((hours, f"in {hours} hours"))
    return options


def replacement_expiry(old: IssuedKey, pol: policy.Policy, now: datetime) -> datetime | None:
    """The old key's lifetime again, from now, clamped to the policy as it is today."""
    lifetime = None if old.expires_at is None else max(old.expires_at - old.created_at, timedelta(days=1))
    latest = policy.latest_expiry(pol, now)
    if latest is None:
        return None if lifetime is None else now + lifetime
    return latest if lifetime is None else min(now + lifetime, latest)


@sensitive_variables()
def rotate(old: IssuedKey, *, actor, nonce: str, grace_hours: int, source_ip=None) -> tuple[Minted, datetime]:
    """Mint the replacement, then schedule the old key's end. Returns the replacement and when
    the old key ends. Raises MintError (the old key untouched) when no replacement was issued."""
    if grace_hours not in {h for h, _ in grace_choices()}:
        raise ValueError("grace period not offered")
    values = {
        "name": old.name,
        "monthly_limit": old.monthly_limit,
        "manage": old.manage,
        "completions": old.completions,
        "expires_at": replacement_expiry(old, policy.resolve(actor), timezone.now()),
    }
    try:
        minted = mint_key(actor=actor, cleaned=values, nonce=nonce, source_ip=source_ip, rotates=old)
    except MintError as exc:
        outcome = {"unknown": Outcome.UNKNOWN, "beyond_policy": Outcome.DENIED}.get(exc.kind, Outcome.FAILURE)
        try:
            lifecycle.audit_key(
                Action.KEY_ROTATION_FAILED, outcome, old, actor=actor, source_ip=source_ip,
                detail=f"no replacement issued ({exc.kind}); this key is unchanged",
            )  # fmt: skip
        except DatabaseError:
            pass  # the mint's own events already say what happened, where the database allowed it
        raise
    ends = _schedule_end(old, minted.key, grace_hours, actor=actor, source_ip=source_ip)
    return minted, ends


def _schedule_end(old: IssuedKey, new: IssuedKey, grace_hours: int, *, actor, source_ip) -> datetime:
    """The old key ends after the grace period, never later than it was already due to."""
    ends = timezone.now() + timedelta(hours=grace_hours)
    if old.expires_at is not None and old.expires_at < ends:
        ends = old.expires_at
    with transaction.atomic():
        IssuedKey.objects.filter(pk=old.pk).update(expires_at=ends, reminded_days=None)
        old.expires_at = ends
        lifecycle.audit_key(
            Action.KEY_ROTATED, Outcome.SUCCESS, old, actor=actor, source_ip=source_ip,
            detail=f"replaced by key {new.api_key_id}; this key ends {expiry.describe(ends)}",
        )  # fmt: skip
        lifecycle.audit_key(
            Action.KEY_ROTATED, Outcome.SUCCESS, new, actor=actor, source_ip=source_ip,
            detail=f"replaces key {old.api_key_id}, which ends {expiry.describe(ends)}",
        )  # fmt: skip
    if grace_hours == 0 or ends <= timezone.now():
        expiry.end(old, actor=actor, source_ip=source_ip, reason="rotated, no grace period")
    else:
        expiry.push(old, actor=actor, source_ip=source_ip)
    return ends
