"""Expiry reminders: the owner is e-mailed PORTAL_EXPIRY_REMINDER_DAYS days before a key expires,
each reminder once per key (and per expiry: extending a key starts them over). Nothing is sent for
keys that are no longer active, keys of deactivated users, or keys already replaced by rotation.

Each reminder is claimed by a conditional UPDATE of `reminded_days` before it is sent, so two
housekeeping runs at once cannot both send it; if sending fails, the claim is given back and the
next run tries again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from portal.audit import chain
from portal.audit.models import AuditEvent

from .expiry import describe
from .models import Issuance, IssuedKey

log = logging.getLogger(__name__)


def _candidates(now: datetime):
    """Active keys of active people expiring within the largest reminder window."""
    window = now + timedelta(days=max(settings.PORTAL_EXPIRY_REMINDER_DAYS))
    return (
        IssuedKey.objects.filter(status=IssuedKey.Status.ACTIVE, expires_at__gt=now, expires_at__lte=window)
        .exclude(rotations__state=Issuance.State.ISSUED)
        .select_related("owner", "issuance")
    )


EXPIRING_LISTED = 10  # My keys' banner names at most this many keys, the soonest first


def expiring_soon(user, now: datetime) -> tuple[list[IssuedKey], int]:
    """My keys' banner: the person's keys within the first (largest) reminder window, the soonest
    EXPIRING_LISTED of them, and how many there are (counted only when there are more): the page
    costs the same however many of the person's keys expire at once."""
    keys = _candidates(now).filter(owner=user).order_by("expires_at", "pk")
    listed = list(keys[: EXPIRING_LISTED + 1])
    total = keys.count() if len(listed) > EXPIRING_LISTED else len(listed)
    return listed[:EXPIRING_LISTED], total


def due_window(key: IssuedKey, now: datetime) -> int:
    """The smallest reminder window the key is in (days)."""
    return min(d for d in settings.PORTAL_EXPIRY_REMINDER_DAYS if key.expires_at - now <= timedelta(days=d))


def run(now: datetime) -> str:
    """Housekeeping: send every reminder that is due. Raises after trying all if any failed."""
    sent = failed = 0
    for key in _candidates(now).filter(owner__is_active=True).exclude(owner__email=""):
        window = due_window(key, now)
        if key.reminded_days is not None and key.reminded_days <= window:
            continue  # this one (or a later one) was already sent
        claimed = IssuedKey.objects.filter(pk=key.pk, reminded_days=key.reminded_days, expires_at=key.expires_at)
        if not claimed.update(reminded_days=window):
            continue  # another run took it, or the key changed meanwhile
        try:
            _send(key, window, now)
        except Exception:  # SMTP trouble of any kind: give the claim back for the next run
            log.exception("Could not send an expiry reminder", extra={"api_key_id": key.api_key_id})
            IssuedKey.objects.filter(pk=key.pk, reminded_days=window).update(reminded_days=key.reminded_days)
            failed += 1
            continue
        chain.record(
            AuditEvent.Action.KEY_EXPIRY_REMINDED,
            AuditEvent.Outcome.SUCCESS,
            actor=None,
            issuance=key.issuance,
            api_key_id=key.api_key_id,
            detail=f"reminder {window} days before expiry ({describe(key.expires_at)}) sent to {key.owner.email}",
        )
        sent += 1
    if failed:
        raise RuntimeError(f"{failed} reminder(s) could not be sent (retried next run); {sent} sent")
    return f"{sent} reminder(s) sent"


def _send(key: IssuedKey, window: int, now: datetime) -> None:
    page = f"{settings.PORTAL_BASE_URL}{reverse('keys:detail', args=[key.pk])}"
    left = key.expires_at - now
    when = "within a day" if left.days < 1 else f"in {left.days} day{'s' if left.days != 1 else ''}"
    body = (
        f"Your Requesty API key “{key.name}” expires {when}, on {describe(key.expires_at)}.\n"
        "After that it stops working and cannot be revived.\n\n"
        f"Extend it (within your policy, or ask an admin): {page}#expiry\n"
        f"Or rotate it, to get a replacement and switch over without downtime: {page}#rotate-title\n\n"
        f"(This is the reminder {window} days before expiry.)\n"
    )
    send_mail(f"Your Requesty key “{key.name}” expires {when}", body, None, [key.owner.email])
