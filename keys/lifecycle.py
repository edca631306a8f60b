"""What happens to a key after minting: spend, limit changes, revocation, offboarding.

Each operation changes the portal's record only after Requesty confirmed, so the record never
claims something Requesty did not do. A limit change reserves the new limit before the call
(`pending_limit`), so it counts against the caps while unsettled, and audits the request
(`key.limit_requested`) in the same transaction. Every change and failure is audited with the
values before and after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.audit import chain
from portal.audit.models import AuditEvent

from . import policy, requesty
from .models import ApprovalRequest, IssuedKey

log = logging.getLogger(__name__)
Action, Outcome, Status = AuditEvent.Action, AuditEvent.Outcome, IssuedKey.Status
SPEND_FRESH_FOR = timedelta(seconds=60)


class LifecycleError(Exception):
    """A change Requesty did not confirm; `message` says what the user can do."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.message, self.status = message, status


def failure_message(exc: requesty.RequestyError, what: str) -> str:
    if isinstance(exc, requesty.AuthFailed):
        return f"The portal is misconfigured and could not {what}; the portal admins have been notified."
    if isinstance(exc, requesty.RateLimited):
        wait = f"in {exc.retry_after} seconds" if exc.retry_after else "in a minute"
        return f"Requesty is busy and did not {what}. Try again {wait}."
    if isinstance(exc, requesty.NotSent):
        return f"Requesty could not be reached, so the portal did not {what}. Try again in a minute."
    if isinstance(exc, requesty.OutcomeUnknown):
        return (
            f"Requesty did not confirm in time whether it could {what}. Nothing was changed in the portal; "
            "check again in a minute before retrying."
        )
    return f"Requesty refused to {what}. Nothing was changed."


def audit_key(action, outcome, key: IssuedKey, *, actor, source_ip=None, upstream_status=None, detail="", **values):
    """One event about `key` (its issuance, id and limit unless `values` say otherwise): the one
    way the key's lifecycle, expiry, rotation and reconcile record what happened to a key."""
    return chain.record(
        action,
        outcome,
        actor=actor,
        issuance=key.issuance,
        source_ip=source_ip,
        upstream_status=upstream_status,
        detail=detail,
        **{"api_key_id": key.api_key_id, "monthly_limit": key.monthly_limit, **values},
    )


def _audit_confirmed(action, key: IssuedKey, upstream_status: int, detail: str, *, actor, source_ip=None):
    """A change Requesty confirmed (`upstream_status`), audited in the transaction that records it."""
    audit_key(
        action, Outcome.SUCCESS, key, actor=actor, source_ip=source_ip, upstream_status=upstream_status, detail=detail
    )


def _log_failure(exc: requesty.RequestyError, what: str, key: IssuedKey) -> None:
    level = logging.ERROR if isinstance(exc, requesty.AuthFailed) else logging.WARNING
    log.log(level, "Requesty %s failed: %s", what, type(exc).__name__, extra={"api_key_id": key.api_key_id})


# --- Spend ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spend:
    spend: Decimal
    limit: Decimal
    checked_at: object

    @property
    def percent(self) -> int:
        """Share of the limit spent, 0-100 (a key without a cap shows 0)."""
        if not self.limit:
            return 0
        return max(0, min(100, int(self.spend * 100 / self.limit)))


def current_spend(key: IssuedKey, *, max_age: timedelta = SPEND_FRESH_FOR) -> Spend:
    """This month's spend, from Requesty at most once a minute per key."""
    now = timezone.now()
    if key.spend is not None and key.spend_checked_at and now - key.spend_checked_at < max_age:
        return Spend(key.spend, key.monthly_limit, key.spend_checked_at)
    try:
        info = requesty.get_key(key.api_key_id)
    except requesty.NotFound:
        # A read never changes the record: reconciliation decides, from Requesty's complete list.
        raise LifecycleError(
            "Requesty does not know this key any more; the portal will check and update it.", 404
        ) from None
    spend = info.monthly_spend if info.monthly_spend is not None else Decimal(0)
    IssuedKey.objects.filter(pk=key.pk).update(spend=spend, spend_checked_at=now)
    key.spend, key.spend_checked_at = spend, now
    return Spend(spend, key.monthly_limit, now)


# --- Limit ----------------------------------------------------------------------------------------
def change_limit(key: IssuedKey, new_limit: Decimal, *, actor, source_ip=None, approval_id: int | None = None) -> None:
    """Change a key's monthly limit the way minting creates a key: check the caps and reserve the
    new limit (`pending_limit`) in one transaction under the owner's lock, commit, and only then
    call Requesty. While the outcome is unsettled the key counts at the higher of both limits, so
    parallel raises, or a raise whose outcome is unknown, cannot take the owner over the caps."""
    before = _reserve_limit(key, new_limit, actor=actor, source_ip=source_ip, approval_id=approval_id)
    detail = f"monthly limit {before:.2f} -> {new_limit:.2f}"
    try:
        requesty.update_limit(key.api_key_id, new_limit)
    except requesty.NotFound:
        mark_deleted_upstream(key, actor=actor, source_ip=source_ip, detail="limit change: key no longer exists")
        raise LifecycleError("This key no longer exists in Requesty; it was deleted outside the portal.", 404) from None
    except requesty.RequestyError as exc:
        _log_failure(exc, "limit change", key)
        unknown = isinstance(exc, requesty.OutcomeUnknown)
        with transaction.atomic():
            if not unknown:  # a definite no: the reservation is released, an approval may be used again
                key.pending_limit, key.pending_limit_at = None, None
                key.save(update_fields=["pending_limit", "pending_limit_at"])
                if approval_id is not None:
                    ApprovalRequest.objects.filter(pk=approval_id, status=ApprovalRequest.Status.USED).update(
                        status=ApprovalRequest.Status.APPROVED
                    )
            audit_key(
                Action.KEY_LIMIT_FAILED,
                Outcome.UNKNOWN if unknown else Outcome.FAILURE,
                key,
                actor=actor,
                source_ip=source_ip,
                upstream_status=exc.status,
                detail=f"{detail} {'unconfirmed' if unknown else 'not applied'}: {type(exc).__name__}",
                monthly_limit=new_limit,
            )
        if unknown:
            raise LifecycleError(_unknown_limit_message(before, new_limit)) from None
        raise LifecycleError(failure_message(exc, "change the limit")) from None
    with transaction.atomic():
        key.monthly_limit, key.pending_limit, key.pending_limit_at = new_limit, None, None
        key.save(update_fields=["monthly_limit", "pending_limit", "pending_limit_at"])
        _audit_confirmed(Action.KEY_LIMIT_CHANGED, key, 204, detail, actor=actor, source_ip=source_ip)


def _reserve_limit(key: IssuedKey, new_limit: Decimal, *, actor, source_ip=None, approval_id=None) -> Decimal:
    """The authoritative check (the form's is advisory): under the owner's lock, with the policy,
    the key and the headroom read afresh, so a raise on another key or a mint committed meanwhile
    counts. Commits `pending_limit` together with a `key.limit_requested` event and returns the
    limit before the change; a refusal changes nothing, is audited as denied and raises
    LifecycleError (403)."""
    try:
        with transaction.atomic():
            if key.owner_id is not None:
                policy.lock_user(key.owner)
            fresh = IssuedKey.objects.select_for_update().get(pk=key.pk)
            key.status, key.monthly_limit = fresh.status, fresh.monthly_limit
            key.pending_limit, key.pending_limit_at = fresh.pending_limit, fresh.pending_limit_at
            approved = approval_id is not None and _claim_limit_approval(key, new_limit, actor, approval_id)
            problem = _limit_problem(key, new_limit, actor, approved=approved)
            if problem:
                raise LifecycleError(problem, 403)
            _check_limit_change_rate(actor)
            key.pending_limit, key.pending_limit_at = new_limit, timezone.now()
            key.save(update_fields=["pending_limit", "pending_limit_at"])
            # Committed with the reservation, as minting records `mint.requested`: a process that
            # dies before the outcome still leaves the attempt in the log.
            audit_key(
                Action.KEY_LIMIT_REQUESTED,
                Outcome.PENDING,
                key,
                actor=actor,
                source_ip=source_ip,
                detail=f"monthly limit {key.monthly_limit:.2f} -> {new_limit:.2f} requested",
                monthly_limit=new_limit,
            )
    except LifecycleError as exc:
        audit_key(
            Action.KEY_LIMIT_FAILED,
            Outcome.DENIED,
            key,
            actor=actor,
            source_ip=source_ip,
            detail=f"monthly limit -> {new_limit:.2f} refused: {exc.message}",
            monthly_limit=new_limit,
        )
        raise
    return key.monthly_limit


def _claim_limit_approval(key: IssuedKey, new_limit: Decimal, actor, approval_id: int) -> bool:
    """An admin's approval of exactly this limit for this key, used once (in the reservation's
    transaction); anything else is refused."""
    approval = (
        ApprovalRequest.objects.select_for_update()
        .filter(pk=approval_id, requester=actor, key=key, kind=ApprovalRequest.Kind.LIMIT)
        .first()
    )
    if approval is None or not approval.is_usable:
        raise LifecycleError("This approval is not valid any more (used, expired or not yours).", 403)
    if approval.monthly_limit != new_limit:
        raise LifecycleError("An approval is only good for exactly the limit that was approved.", 403)
    approval.status = ApprovalRequest.Status.USED
    approval.save(update_fields=["status"])
    audit_key(Action.APPROVAL_USED, Outcome.SUCCESS, key, actor=actor, detail=f"approval #{approval.pk}")
    return True


def _limit_problem(key: IssuedKey, new_limit: Decimal, actor, *, approved: bool = False) -> str:
    if key.status != Status.ACTIVE:
        return "This key is no longer active, so its limit cannot change."
    if key.pending_limit is not None:
        return PENDING_LIMIT_MESSAGE.format(pending=policy.money(key.pending_limit))
    pol = policy.resolve(actor)
    if pol.is_admin or approved:
        return ""
    if new_limit > key.monthly_limit and new_limit > pol.max_key_limit:  # lowering is always allowed
        return f"Your monthly limit can be at most {policy.money(pol.max_key_limit)}."
    if pol.max_total_limit is None or key.owner is None:
        return ""
    return policy.limit_raise_problem(policy.headroom(key.owner, pol), pol, key, new_limit)


def _check_limit_change_rate(actor) -> None:
    """At most PORTAL_LIMIT_CHANGES_PER_HOUR limit changes per person (portal admins excepted) in a
    rolling hour: each costs two audit events and a Requesty call. Counted under the owner's lock
    from the `key.limit_requested` events, so it holds across processes."""
    if actor is None or policy.resolve(actor).is_admin:
        return
    limit = settings.PORTAL_LIMIT_CHANGES_PER_HOUR
    recent = AuditEvent.objects.filter(
        action=Action.KEY_LIMIT_REQUESTED, actor_id=actor.pk, created_at__gte=timezone.now() - timedelta(hours=1)
    )
    if recent[:limit].count() >= limit:  # counts at most `limit` rows
        raise LifecycleError(
            f"You have changed limits {limit} times in the last hour, the most allowed. Try again later; "
            "nothing was changed.",
            429,
        )


PENDING_LIMIT_MESSAGE = (
    "A change of this key's limit to {pending} is still being confirmed with Requesty, so the limit cannot "
    "change again yet. The portal checks with Requesty regularly; try again once it has."
)


def _unknown_limit_message(before: Decimal, new_limit: Decimal) -> str:
    return (
        f"Requesty did not confirm in time whether it changed the limit to {policy.money(new_limit)}; it may "
        f"still be {policy.money(before)}. Until the portal has checked with Requesty, this key counts as "
        f"{policy.money(max(before, new_limit))} against your total and its limit cannot be changed again. "
        "Please do not retry now."
    )


# --- Revocation -----------------------------------------------------------------------------------
def revoke(key: IssuedKey, *, actor, source_ip=None, reason: str = "revoked by user") -> str:
    """Delete the key upstream, then mark it. Returns the key's new status."""
    try:
        requesty.delete_key(key.api_key_id)
    except requesty.NotFound:
        mark_deleted_upstream(key, actor=actor, source_ip=source_ip, detail=f"{reason}: already gone upstream")
        return Status.DELETED_UPSTREAM
    except requesty.RequestyError as exc:
        _log_failure(exc, "revocation", key)
        audit_key(
            Action.KEY_REVOKE_FAILED,
            Outcome.UNKNOWN if isinstance(exc, requesty.OutcomeUnknown) else Outcome.FAILURE,
            key,
            actor=actor,
            source_ip=source_ip,
            upstream_status=exc.status,
            detail=f"{reason}: {type(exc).__name__}",
        )
        raise LifecycleError(failure_message(exc, "revoke the key")) from None
    with transaction.atomic():
        key.mark_revoked()
        _audit_confirmed(Action.KEY_REVOKED, key, 204, reason, actor=actor, source_ip=source_ip)
    return Status.REVOKED


def mark_deleted_upstream(key: IssuedKey, *, actor, source_ip=None, detail: str) -> None:
    with transaction.atomic():
        key.mark_deleted_upstream()
        _audit_confirmed(Action.KEY_DELETED_UPSTREAM, key, 404, detail, actor=actor, source_ip=source_ip)


# --- Offboarding ----------------------------------------------------------------------------------
def offboard(user, *, actor=None) -> tuple[list[IssuedKey], list[IssuedKey]]:
    """Revoke every active key of a deactivated user. Returns (revoked, failed); failed keys are
    flagged for admins (`revocation_failed_at`) and retried by `reconcile_keys`."""
    keys = IssuedKey.objects.filter(owner=user, status=Status.ACTIVE)
    return revoke_all(keys, reason=f"offboarding of {user.get_username()}", actor=actor)


def revoke_all(keys, *, reason: str, actor=None) -> tuple[list[IssuedKey], list[IssuedKey]]:
    """Revoke each active key of `keys` (a queryset), flagging those that fail."""
    revoked, failed = [], []
    for key in keys.filter(status=Status.ACTIVE).select_related("issuance"):
        try:
            revoke(key, actor=actor, reason=reason)
            revoked.append(key)
        except LifecycleError:
            IssuedKey.objects.filter(pk=key.pk).update(revocation_failed_at=timezone.now())
            failed.append(key)
    if failed:
        log.error(
            "Could not revoke %d key(s): %s",
            len(failed),
            reason,
            extra={"api_key_ids": ",".join(k.api_key_id for k in failed)},
        )
    return revoked, failed
