"""Idle keys: a key nobody uses is a risk with no benefit, so its owner is asked whether it is still needed.

A key with no requests for PORTAL_IDLE_DAYS (counted from its creation if never used, and from the
last time its owner said "keep") gets one e-mail with a Keep and a Revoke link. Using the key or
keeping it ends the question; with PORTAL_IDLE_REVOKE_DAYS set, a key still idle that many days
after the e-mail is revoked and the owner told why. Run by `manage.py housekeeping` from the
cached organization usage (keys/usage.py), never a call per key.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from portal.audit import chain
from portal.audit.models import AuditEvent

from . import lifecycle, usage
from .alerts import link
from .models import IssuedKey

log = logging.getLogger(__name__)


def _end_of(day: date | None) -> datetime | None:
    return datetime.combine(day + timedelta(days=1), time.min, UTC) if day else None


def last_active(key: IssuedKey, last_used: date | None) -> datetime:
    """The latest of: created, kept, the end of the last day with requests."""
    moments = [key.created_at, key.kept_at, _end_of(max(filter(None, [last_used, key.last_used_on]), default=None))]
    return max(m for m in moments if m is not None)


def check(now=None) -> str:
    now = now or timezone.now()
    org = usage.org_usage()
    if not org.ok:
        raise RuntimeError(org.error)
    idle_for = timedelta(days=settings.PORTAL_IDLE_DAYS)
    revoke_after = timedelta(days=settings.PORTAL_IDLE_REVOKE_DAYS)
    asked = revoked = failed = 0
    keys = IssuedKey.objects.filter(status=IssuedKey.Status.ACTIVE, owner__isnull=False)
    for key in keys.select_related("owner", "issuance"):
        active = last_active(key, org.last_used.get(key.api_key_id))
        if key.idle_notified_at is None:
            if now - active >= idle_for:
                asked += _ask(key, active, now)
        elif active > key.idle_notified_at:  # used since the question: it is answered
            IssuedKey.objects.filter(pk=key.pk).update(idle_notified_at=None)
        elif revoke_after and now - key.idle_notified_at >= revoke_after:
            ok = _revoke(key, active)
            revoked, failed = revoked + ok, failed + (not ok)
    summary = f"{asked} idle key owner(s) asked, {revoked} idle key(s) revoked"
    if failed:
        raise RuntimeError(f"{summary}; {failed} could not be revoked (retried next run)")
    return summary


def _since(active: datetime) -> str:
    return f"{active:%Y-%m-%d}"


def _ask(key: IssuedKey, active: datetime, now: datetime) -> int:
    keep, revoke = link(reverse("keys:keep", args=[key.pk])), link(reverse("keys:revoke", args=[key.pk]))
    then = (
        f"If you do nothing, it will be revoked {settings.PORTAL_IDLE_REVOKE_DAYS} days from now."
        if settings.PORTAL_IDLE_REVOKE_DAYS
        else "Nothing happens to it if you do nothing."
    )
    text = (
        f"Your Requesty key “{key.name}” has had no requests since {_since(active)} "
        f"({settings.PORTAL_IDLE_DAYS} days or more). Is it still needed?\n\n"
        f"Keep it: {keep}\nRevoke it: {revoke}\n\n{then}\n"
    )
    try:
        with transaction.atomic():
            IssuedKey.objects.filter(pk=key.pk).update(idle_notified_at=now)
            send_mail(f"Is your key “{key.name}” still needed?", text, None, [key.owner.email])
            chain.record(
                AuditEvent.Action.KEY_IDLE_NOTIFIED,
                AuditEvent.Outcome.SUCCESS,
                actor=None,
                issuance=key.issuance,
                detail=f"no requests since {_since(active)}; asked {key.owner.get_username()} if still needed",
            )
    except Exception:
        log.exception("Idle key e-mail failed", extra={"api_key_id": key.api_key_id})
        return 0
    return 1


def _revoke(key: IssuedKey, active: datetime) -> bool:
    reason = (
        f"idle: no requests since {_since(active)}, and none in the {settings.PORTAL_IDLE_REVOKE_DAYS} days "
        "since its owner was asked"
    )
    try:
        lifecycle.revoke(key, actor=None, reason=reason)
    except lifecycle.LifecycleError:
        IssuedKey.objects.filter(pk=key.pk).update(revocation_failed_at=timezone.now())
        return False
    try:
        send_mail(
            f"Your key “{key.name}” was revoked: unused",
            f"Your Requesty key “{key.name}” was revoked by the portal: {reason}.\n\n"
            f"You were asked on {key.idle_notified_at:%Y-%m-%d} whether it was still needed. If you need a key "
            f"again, create a new one: {link(reverse('keys:new'))}\n",
            None,
            [key.owner.email],
        )
    except Exception:  # the key is revoked and audited; the note is a courtesy
        log.exception("Idle revocation e-mail failed", extra={"api_key_id": key.api_key_id})
    return True
