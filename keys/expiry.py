"""Key expiry: telling Requesty, extending, and ending keys when they are due.

Requesty takes an expiry only in a separate call after the create (docs/requesty-api.md), so a key
may exist with its expiry not yet set upstream. The portal's record (`IssuedKey.expires_at`) is
what counts: a failed call is retried by housekeeping with a growing pause (`expiry_retry_at`), and
at the due time housekeeping deletes the key upstream itself, whatever Requesty did
(docs/security.md, I6). Every step is an audit event.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal.audit.models import AuditEvent

from . import lifecycle, policy, requesty, sidecalls
from .models import ApprovalRequest, IssuedKey

log = logging.getLogger(__name__)
Action, Outcome, Status = AuditEvent.Action, AuditEvent.Outcome, IssuedKey.Status
MAX_RETRY_PAUSE = timedelta(hours=1)


def describe(moment: datetime | None) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def retry_pause(failures: int) -> timedelta:
    """1, 2, 4 ... minutes after consecutive failures, at most an hour: a Requesty outage costs a
    few calls per key, not one a minute."""
    return min(MAX_RETRY_PAUSE, timedelta(minutes=2 ** min(failures - 1, 6)))


def push(key: IssuedKey, *, actor=None, source_ip=None) -> bool:
    """Send the key's recorded expiry to Requesty. True when confirmed; on failure the key is
    marked "expiry not yet set in Requesty" and housekeeping retries it."""
    sent = key.expires_at
    return pushed(key, sent, send(key, sent), actor=actor, source_ip=source_ip)


def send(key: IssuedKey, sent: datetime | None) -> Exception | None:
    """The calling half of `push`: what setting `sent` in Requesty raised (None: confirmed)."""
    return sidecalls.attempt(partial(requesty.set_expiry, key.api_key_id, sent))


def pushed(key: IssuedKey, sent: datetime | None, error: Exception | None, *, actor=None, source_ip=None) -> bool:
    """The recording half of `push`: what the expiry call that sent `sent` came to (`error`: what it
    raised; None: Requesty confirmed it), in the key's record and the audit log. A mint makes the
    call itself, beside its label call (keys/minting.py)."""
    if isinstance(error, requesty.NotFound):
        lifecycle.mark_deleted_upstream(key, actor=actor, source_ip=source_ip, detail="setting the expiry: key gone")
        return False
    if isinstance(error, requesty.RequestyError):
        failures = key.expiry_failures + 1
        key.expiry_retry_at, key.expiry_failures = timezone.now() + retry_pause(failures), failures
        log.warning("Requesty expiry call failed: %s", type(error).__name__, extra={"api_key_id": key.api_key_id})
        with transaction.atomic():
            IssuedKey.objects.filter(pk=key.pk).update(expiry_retry_at=key.expiry_retry_at, expiry_failures=failures)
            _audit_failure(
                key,
                error,
                actor,
                source_ip,
                f"expiry {describe(sent)} not set in Requesty ({type(error).__name__}); "
                f"retrying from {describe(key.expiry_retry_at)}, the portal enforces it meanwhile",
            )
        return False
    if error is not None:
        raise error
    detail = f"expiry {describe(sent)} set in Requesty"
    if key.expiry_retry_at is None and not key.expiry_failures:  # right after a mint: nothing to clear
        _audit_set(key, actor, source_ip, detail)  # one append: its own transaction, no savepoint
        return True
    with transaction.atomic():
        # Only if the record still says what was sent (an extension may have come in meanwhile).
        IssuedKey.objects.filter(pk=key.pk, expires_at=sent).update(expiry_retry_at=None, expiry_failures=0)
        key.expiry_retry_at, key.expiry_failures = None, 0
        _audit_set(key, actor, source_ip, detail)
    return True


def end(key: IssuedKey, *, actor=None, source_ip=None, reason: str = "expired") -> bool:
    """Delete a due key upstream (a 404 counts: already gone) and record it as expired. Safe to
    run twice at once: only the run whose conditional update wins audits it."""
    try:
        requesty.delete_key(key.api_key_id)
        status = 204
    except requesty.NotFound:
        status = 404
    except requesty.RequestyError as exc:
        what = f"{reason}: delete in Requesty failed ({type(exc).__name__}); retrying"
        _audit_failure(key, exc, actor, source_ip, what)
        return False
    with transaction.atomic():
        now = timezone.now()
        ended = IssuedKey.objects.filter(pk=key.pk, status=Status.ACTIVE).update(
            status=Status.EXPIRED, ended_at=now, pending_limit=None, pending_limit_at=None, expiry_retry_at=None
        )
        if ended:
            key.status, key.ended_at = Status.EXPIRED, now
            gone = "deleted in Requesty" if status == 204 else "already gone from Requesty"
            lifecycle.audit_key(
                Action.KEY_EXPIRED,
                Outcome.SUCCESS,
                key,
                actor=actor,
                source_ip=source_ip,
                upstream_status=status,
                detail=f"{reason} ({describe(key.expires_at)}): {gone}",
            )
    return True


def _audit_set(key: IssuedKey, actor, source_ip, detail: str) -> None:
    """Requesty confirmed (204) the key's expiry."""
    ok = {"actor": actor, "source_ip": source_ip, "upstream_status": 204, "detail": detail}
    lifecycle.audit_key(Action.KEY_EXPIRY_SET, Outcome.SUCCESS, key, **ok)


def _audit_failure(key: IssuedKey, exc: requesty.RequestyError, actor, source_ip, detail: str) -> None:
    """A Requesty call about a key's expiry that did not succeed: unknown or failed, by its error."""
    unknown = isinstance(exc, requesty.OutcomeUnknown)
    lifecycle.audit_key(
        Action.KEY_EXPIRY_FAILED, Outcome.UNKNOWN if unknown else Outcome.FAILURE, key,
        actor=actor, source_ip=source_ip, upstream_status=exc.status, detail=detail,
    )  # fmt: skip


def run_due(now: datetime) -> str:
    """Housekeeping: end every key that is due, then retry unconfirmed expiries of the others.
    Raises after doing all of it if a due key could not be deleted, so the run exits non-zero."""
    due = IssuedKey.objects.filter(status=Status.ACTIVE, expires_at__lte=now).select_related("issuance")
    ended = failed = 0
    for key in due:
        if end(key):
            ended += 1
        else:
            failed += 1
    retry = IssuedKey.objects.filter(status=Status.ACTIVE, expiry_retry_at__lte=now).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    attempts = confirmed = 0
    for key in retry.select_related("issuance"):
        attempts += 1
        confirmed += push(key)
    summary = f"{ended} key(s) expired, {confirmed} of {attempts} expiry retries confirmed"
    if failed:
        raise RuntimeError(f"{failed} due key(s) could not be deleted in Requesty; {summary}")
    return summary


# --- Extending ------------------------------------------------------------------------------------
def extend(key: IssuedKey, new_expiry: datetime | None, *, actor, source_ip=None, approval=None) -> None:
    """Give a key a later expiry: within the actor's policy, or exactly what an approval (kind
    EXPIRY) granted. Checked under the owner's lock, then Requesty is told, then the record: the
    record never claims a later end than Requesty confirmed. Raises LifecycleError."""
    before = key.expires_at
    detail = f"expiry {describe(before)} -> {describe(new_expiry)}"
    try:
        with transaction.atomic():
            if key.owner_id is not None:
                policy.lock_user(key.owner)
            fresh = IssuedKey.objects.get(pk=key.pk)
            key.status, key.expires_at, before = fresh.status, fresh.expires_at, fresh.expires_at
            problem = _extend_problem(key, new_expiry, actor, approval)
            if problem:
                raise lifecycle.LifecycleError(problem, 403)
    except lifecycle.LifecycleError as exc:
        lifecycle.audit_key(
            Action.KEY_EXPIRY_FAILED, Outcome.DENIED, key, actor=actor, source_ip=source_ip,
            detail=f"{detail} refused: {exc.message}",
        )  # fmt: skip
        raise
    try:
        requesty.set_expiry(key.api_key_id, new_expiry)
    except requesty.NotFound:
        lifecycle.mark_deleted_upstream(key, actor=actor, source_ip=source_ip, detail="extending: key no longer exists")
        raise lifecycle.LifecycleError("This key no longer exists in Requesty.", 404) from None
    except requesty.RequestyError as exc:
        _audit_failure(key, exc, actor, source_ip, f"{detail} not confirmed: {type(exc).__name__}")
        raise lifecycle.LifecycleError(lifecycle.failure_message(exc, "extend the key")) from None
    with transaction.atomic():
        IssuedKey.objects.filter(pk=key.pk).update(
            expires_at=new_expiry, expiry_retry_at=None, expiry_failures=0, reminded_days=None
        )
        key.expires_at, key.expiry_retry_at, key.expiry_failures, key.reminded_days = new_expiry, None, 0, None
        if approval is not None:
            approved = ApprovalRequest.Status.APPROVED
            ApprovalRequest.objects.filter(pk=approval.pk, status=approved).update(status=ApprovalRequest.Status.USED)
            detail += f" (approval #{approval.pk})"
        _audit_set(key, actor, source_ip, f"extended: {detail}")


def _extend_problem(key: IssuedKey, new_expiry: datetime | None, actor, approval) -> str:
    now = timezone.now()
    if key.status != Status.ACTIVE:
        return "This key is no longer active; an expired key cannot be revived. Create a replacement instead."
    if key.expires_at is None:
        return "This key never expires; there is nothing to extend."
    if key.expires_at <= now:
        return "This key has reached its expiry and is being removed; create a replacement instead."
    if approval is not None:
        if not (approval.is_usable and approval.kind == ApprovalRequest.Kind.EXPIRY and approval.key_id == key.pk):
            return "This approval is not valid any more (used, expired or for another key)."
        if approval.key_expires_at != new_expiry:
            return "An approval is only good for exactly the expiry that was approved."
    if new_expiry is not None and new_expiry <= key.expires_at:
        return f"Choose a later expiry than the current one ({describe(key.expires_at)})."
    if approval is not None:
        return ""
    return policy.lifetime_problem(policy.resolve(actor), new_expiry, now)
