"""Compare the portal's records with the keys Requesty actually holds, and settle the differences.

Decisions are made only on *positive* evidence from a complete key list (docs/security.md, step
4): an issuance whose outcome is unknown is resolved by finding its key (by id, or by the
`[portal:<reference>]` marker in the upstream name) and deleting it, or by a successful list that
does not contain it. A limit change whose outcome is unknown is settled with the limit the list
shows. A failed list changes nothing.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from portal.accounts.permissions import is_portal_admin
from portal.audit import chain
from portal.audit.models import AuditEvent

from . import lifecycle, requesty
from .models import ApprovalRequest, Issuance, IssuedKey

log = logging.getLogger(__name__)
Action, Outcome, State, Status = AuditEvent.Action, AuditEvent.Outcome, Issuance.State, IssuedKey.Status
# The marker ends the upstream name (Issuance.upstream_name); names may not contain "[portal:".
MARKER = re.compile(r"\[portal:([0-9a-f]{12})\]$")
SYSTEM = {"actor_username": "system:reconcile_keys"}
_LOCK_ID = 0x7265636F  # "reco"


@dataclass
class Report:
    compensated: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    still_unknown: list[str] = field(default_factory=list)
    deleted_upstream: list[str] = field(default_factory=list)
    reappeared: list[str] = field(default_factory=list)
    limits_settled: list[str] = field(default_factory=list)
    limits_adopted: list[str] = field(default_factory=list)
    offboarded: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)
    privileged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        labels = {
            "compensated": "unknown issuances found upstream and deleted",
            "absent": "unknown issuances proved never created",
            "still_unknown": "unknown issuances left for the next run",
            "deleted_upstream": "portal keys deleted outside the portal",
            "reappeared": "keys marked deleted outside the portal found again, active again",
            "limits_settled": "unconfirmed limit changes settled",
            "limits_adopted": "limits changed outside the portal adopted",
            "offboarded": "keys of deactivated or deleted users revoked",
            "unmanaged": "upstream keys with no portal record",
            "privileged": "upstream keys with manage rights no admin issued",
        }
        out = []
        for name, label in labels.items():
            items = getattr(self, name)
            out.append(f"{len(items):5d}  {label}")
            out.extend(f"         {item}" for item in items)
        return out


class ListFailed(Exception):
    pass


@contextmanager
def _exclusive():
    """One reconciliation at a time across every portal instance (PostgreSQL advisory lock)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:  # plain SQL: the ORM has no advisory locks
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_ID])
        got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])


def reconcile(*, dry_run: bool = False, stale_after: timedelta = timedelta(minutes=10)) -> Report | None:
    """Returns the report, or None if another reconciliation holds the lock."""
    with _exclusive() as got:
        if not got:
            return None
        return _reconcile(dry_run, stale_after)


def _reconcile(dry_run: bool, stale_after: timedelta) -> Report:
    # Only records older than the list are judged by it: a key minted while the list was in
    # flight is simply not in it yet.
    listed_at = timezone.now()
    known = IssuedKey.objects.filter(status=Status.ACTIVE, created_at__lt=listed_at)
    known = list(known.values_list("api_key_id", "monthly_limit", "pending_limit"))
    active_before = {api_key_id for api_key_id, _, _ in known}
    # Limits as the portal held them before the list, for keys with no change of their own in flight.
    limits_before = {api_key_id: limit for api_key_id, limit, pending in known if pending is None}
    try:
        upstream = requesty.list_keys()
        own_id = requesty.get_key("self").id
    except requesty.RequestyError as exc:
        raise ListFailed(f"Requesty's key list failed ({type(exc).__name__}); nothing was changed.") from None
    by_id = {k.id: k for k in upstream}
    if active_before and own_id not in by_id and not active_before & by_id.keys():
        # An empty list, another organization's list (wrong base URL), a proxy's stub: none of the
        # keys we know is in it. Acting on it would mark every key deleted.
        raise ListFailed(
            "Requesty's key list contains neither the admin token's key nor any key the portal issued; "
            "it looks partial or wrong, so nothing was changed."
        )
    report = Report()
    by_marker = {m.group(1): k for k in upstream if (m := MARKER.search(k.name))}

    handled = _settle_unknown_issuances(report, by_id, by_marker, listed_at - stale_after, dry_run)
    _remove_late_keys(report, by_marker, handled, dry_run)
    _settle_limit_changes(report, by_id, listed_at - stale_after, dry_run)
    _adopt_outside_limits(report, by_id, limits_before, dry_run)
    _mark_deleted_outside(report, by_id, active_before, dry_run)
    _revive_reappeared(report, by_id, listed_at, dry_run)
    _offboard_inactive(report, dry_run)
    recent = listed_at - stale_after
    in_flight = {
        i.reference
        for i in Issuance.objects.filter(state=State.REQUESTED, created_at__gte=recent)
        | Issuance.objects.filter(state=State.UNKNOWN, updated_at__gte=recent)
    }
    _report_strangers(report, [k for k in upstream if k.id not in handled], in_flight, own_id)
    return report


def _settle_unknown_issuances(report, by_id, by_marker, cutoff, dry_run) -> set[str]:
    """Unknown outcomes get the same grace period as stale requests: a create that timed out may
    still be landing upstream, and "absent" must mean absent."""
    pending = Issuance.objects.filter(state=State.UNKNOWN, updated_at__lt=cutoff) | Issuance.objects.filter(
        state=State.REQUESTED, created_at__lt=cutoff
    )
    handled: set[str] = set()
    for issuance in pending.order_by("created_at"):
        found = by_id.get(issuance.api_key_id) if issuance.api_key_id else None
        found = found or by_marker.get(issuance.reference)
        label = f"{issuance.reference} “{issuance.name}”"
        if found is None:
            report.absent.append(label)
            if not dry_run:
                _set_state(issuance, State.ABSENT, Action.ISSUANCE_ABSENT, "no such key in Requesty's complete list")
            continue
        handled.add(found.id)
        if dry_run:
            report.compensated.append(f"{label} -> {found.id}")
            continue
        if _delete(report, label, found.id):
            issuance.api_key_id = found.id
            report.compensated.append(f"{label} -> {found.id}")
            _set_state(
                issuance, State.COMPENSATED, Action.KEY_COMPENSATED, "found by reconciliation and deleted upstream"
            )
    return handled


def _remove_late_keys(report, by_marker, handled: set[str], dry_run) -> None:
    """A key whose marker names an attempt already settled as not issued (absent, rejected or
    compensated) appeared late upstream: nobody received it, so it goes (a positive match)."""
    recorded = set(IssuedKey.objects.values_list("api_key_id", flat=True))
    for ref, key in by_marker.items():
        if key.id in handled or key.id in recorded:
            continue
        # The reference is the first 12 hex digits of the issuance's UUID: an indexed range query.
        low, high = uuid.UUID(ref + "0" * 20), uuid.UUID(ref + "f" * 20)
        issuance = Issuance.objects.filter(
            id__gte=low, id__lte=high, state__in=[State.ABSENT, State.REJECTED, State.COMPENSATED]
        ).first()
        if issuance is None:
            continue
        label = f"{issuance.reference} “{issuance.name}” (late)"
        if dry_run:
            report.compensated.append(f"{label} -> {key.id}")
        elif _delete(report, label, key.id):
            handled.add(key.id)
            report.compensated.append(f"{label} -> {key.id}")
            chain.record(
                Action.KEY_COMPENSATED,
                Outcome.SUCCESS,
                issuance=issuance,
                actor=None,
                api_key_id=key.id,
                detail=f"key appeared after the attempt was settled as {issuance.state}; deleted upstream",
                **SYSTEM,
            )


def _delete(report, label: str, api_key_id: str) -> bool:
    try:
        requesty.delete_key(api_key_id)
    except requesty.NotFound:
        pass
    except requesty.RequestyError as exc:
        report.still_unknown.append(f"{label}: delete failed ({type(exc).__name__})")
        return False
    return True


def _set_state(issuance: Issuance, state: str, action: str, detail: str) -> None:
    with transaction.atomic():
        issuance.state = state
        issuance.save(update_fields=["state", "api_key_id", "updated_at"])
        # Nothing was issued: an approval this attempt used may be used again.
        ApprovalRequest.objects.filter(issuance=issuance, status=ApprovalRequest.Status.USED).update(
            status=ApprovalRequest.Status.APPROVED, issuance=None
        )
        chain.record(action, Outcome.SUCCESS, issuance=issuance, actor=None, detail=detail, **SYSTEM)


def _settle_limit_changes(report, by_id, cutoff, dry_run) -> None:
    """A limit change whose outcome is unknown (or whose process died) counts at its higher limit
    until settled here: the list says which limit Requesty holds, and the record adopts it. The
    same grace period as for issuances lets a change still in flight land first; a key missing
    from the list is left to `_mark_deleted_outside`."""
    pending = IssuedKey.objects.filter(status=Status.ACTIVE, pending_limit__isnull=False, pending_limit_at__lt=cutoff)
    for key in pending.select_related("issuance"):
        found = by_id.get(key.api_key_id)
        if found is None:
            continue
        before, wanted, held = key.monthly_limit, key.pending_limit, found.monthly_limit
        label = f"{key.api_key_id} “{key.name}”"
        if held is None:
            report.still_unknown.append(f"{label}: limit change unsettled (Requesty's list shows no limit)")
            continue
        report.limits_settled.append(f"{label}: {before:.2f} -> {wanted:.2f}, Requesty holds {held:.2f}")
        if dry_run:
            continue
        applied = held != before or held == wanted
        how = "applied" if held == wanted else "superseded by a limit set elsewhere" if applied else "not applied"
        with transaction.atomic():
            # Only the reservation seen here: a newer change reserved meanwhile is left alone.
            if not IssuedKey.objects.filter(
                pk=key.pk, pending_limit=wanted, pending_limit_at=key.pending_limit_at
            ).update(monthly_limit=held, pending_limit=None, pending_limit_at=None):
                continue
            key.monthly_limit = held
            lifecycle.audit_key(
                Action.KEY_LIMIT_CHANGED if applied else Action.KEY_LIMIT_FAILED,
                Outcome.SUCCESS if applied else Outcome.FAILURE,
                key,
                actor=None,
                detail=f"reconciliation: unconfirmed change {before:.2f} -> {wanted:.2f} {how}; "
                f"Requesty holds {held:.2f}",
                **SYSTEM,
            )


def _adopt_outside_limits(report, by_id, limits_before, dry_run) -> None:
    """A limit changed in Requesty's dashboard (or by another tool) is what Requesty enforces, so
    the caps must count it: the record adopts the listed limit, with an audit event. Only where the
    record still holds the limit it had before the list was fetched and no portal change is in
    flight, so a change the portal made meanwhile is never overwritten by the older list."""
    for api_key_id, before in limits_before.items():
        found = by_id.get(api_key_id)
        held = found.monthly_limit if found is not None else None
        if held is None or held == before:
            continue
        key = IssuedKey.objects.filter(api_key_id=api_key_id).select_related("issuance").first()
        if key is None:
            continue
        report.limits_adopted.append(f"{api_key_id} “{key.name}”: {before:.2f} -> {held:.2f}")
        if dry_run:
            continue
        with transaction.atomic():
            if not IssuedKey.objects.filter(
                pk=key.pk, status=Status.ACTIVE, monthly_limit=before, pending_limit__isnull=True
            ).update(monthly_limit=held):
                continue
            key.monthly_limit = held
            lifecycle.audit_key(
                Action.KEY_LIMIT_CHANGED,
                Outcome.SUCCESS,
                key,
                actor=None,
                detail=f"reconciliation: limit changed outside the portal {before:.2f} -> {held:.2f}",
                **SYSTEM,
            )


def _mark_deleted_outside(report, by_id, active_before, dry_run) -> None:
    gone = IssuedKey.objects.filter(status=Status.ACTIVE, api_key_id__in=active_before - by_id.keys())
    for key in gone.select_related("issuance"):
        report.deleted_upstream.append(f"{key.api_key_id} “{key.name}”")
        if not dry_run:
            lifecycle.mark_deleted_upstream(key, actor=None, detail="reconciliation: not in Requesty's key list")


def _revive_reappeared(report, by_id, listed_at, dry_run) -> None:
    """A key marked deleted outside the portal that a complete list shows again (an earlier list
    that left it out, a restore in Requesty) still works and spends: it is active again with the
    limit Requesty holds, counts against its owner's caps, and can be revoked. Runs before
    offboarding, so a revived key of a deactivated or deleted user is revoked at once."""
    back = IssuedKey.objects.filter(
        status=Status.DELETED_UPSTREAM, api_key_id__in=by_id.keys(), ended_at__lt=listed_at
    ).select_related("issuance")
    for key in back:
        found = by_id[key.api_key_id]
        limit = found.monthly_limit if found.monthly_limit is not None else key.monthly_limit
        report.reappeared.append(f"{key.api_key_id} “{key.name}”")
        if dry_run:
            continue
        with transaction.atomic():
            revived = IssuedKey.objects.filter(pk=key.pk, status=Status.DELETED_UPSTREAM).update(
                status=Status.ACTIVE, ended_at=None, monthly_limit=limit
            )
            if not revived:
                continue
            before, key.status, key.monthly_limit = key.monthly_limit, Status.ACTIVE, limit
            lifecycle.audit_key(
                Action.KEY_REAPPEARED,
                Outcome.SUCCESS,
                key,
                actor=None,
                detail=f"reconciliation: marked deleted outside the portal, but in Requesty's key list again; "
                f"active again, monthly limit {before:.2f} -> {limit:.2f}",
                **SYSTEM,
            )


def _offboard_inactive(report, dry_run) -> None:
    """Safety net for deactivations that bypassed signals (e.g. QuerySet.update), and for keys
    whose owner was deleted."""
    for user in get_user_model().objects.filter(is_active=False, issued_keys__status=Status.ACTIVE).distinct():
        if dry_run:
            report.offboarded.extend(k.api_key_id for k in user.issued_keys.filter(status=Status.ACTIVE))
            continue
        revoked, failed = lifecycle.offboard(user)
        report.offboarded.extend(k.api_key_id for k in revoked)
        report.still_unknown.extend(f"{k.api_key_id}: offboarding revoke failed" for k in failed)
    # A key loses its owner only when the owner is deleted (IssuedKey.owner is SET_NULL).
    orphans = IssuedKey.objects.filter(owner__isnull=True, status=Status.ACTIVE)
    if dry_run:
        report.offboarded.extend(orphans.values_list("api_key_id", flat=True))
        return
    revoked, failed = lifecycle.revoke_all(orphans, reason="offboarding: its owner was deleted")
    report.offboarded.extend(k.api_key_id for k in revoked)
    report.still_unknown.extend(f"{k.api_key_id}: offboarding revoke failed" for k in failed)


def _report_strangers(report, upstream, in_flight: set[str], own_id: str) -> None:
    records = {k.api_key_id: k for k in IssuedKey.objects.select_related("owner")}
    for key in upstream:
        if key.id == own_id:
            continue
        record = records.get(key.id)
        marker = MARKER.search(key.name)
        if record is None and not (marker and marker.group(1) in in_flight):
            report.unmanaged.append(f"{key.id} “{key.name}”")
        if key.permissions.get("manage") not in ("none", ""):
            if record is None or record.owner is None or not is_portal_admin(record.owner):
                report.privileged.append(f"{key.id} “{key.name}” manage={key.permissions['manage']}")
