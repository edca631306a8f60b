"""Compare the portal's records with the keys Requesty actually holds, and settle the differences.

Decisions are made only on *positive* evidence from a complete key list (shared/security.md, step
4): an issuance whose outcome is unknown is resolved by finding its key (by id, or by the
`[portal:<reference>]` marker in the upstream name) and deleting it, or by a successful list that
does not contain it. A failed list changes nothing.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from . import audit, lifecycle, policy, requesty
from .models import AuditEvent, Issuance, IssuedKey

log = logging.getLogger(__name__)
Action, Outcome, State, Status = AuditEvent.Action, AuditEvent.Outcome, Issuance.State, IssuedKey.Status
MARKER = re.compile(r"\[portal:([0-9a-f]{12})\]")
SYSTEM = {"actor_username": "system:reconcile_keys"}
_LOCK_ID = 0x7265636F  # "reco"


@dataclass
class Report:
    compensated: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    still_unknown: list[str] = field(default_factory=list)
    deleted_upstream: list[str] = field(default_factory=list)
    offboarded: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)
    privileged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        labels = {
            "compensated": "unknown issuances found upstream and deleted",
            "absent": "unknown issuances proved never created",
            "still_unknown": "unknown issuances left for the next run",
            "deleted_upstream": "portal keys deleted outside the portal",
            "offboarded": "keys of deactivated users revoked",
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
    with connection.cursor() as cursor:
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
    try:
        upstream = requesty.list_keys()
    except requesty.RequestyError as exc:
        raise ListFailed(f"Requesty's key list failed ({type(exc).__name__}); nothing was changed.") from None
    report = Report()
    by_id = {k.id: k for k in upstream}
    by_marker = {m.group(1): k for k in upstream if (m := MARKER.search(k.name))}

    _settle_unknown_issuances(report, by_id, by_marker, stale_after, dry_run)
    _mark_deleted_outside(report, by_id, dry_run)
    _offboard_inactive(report, dry_run)
    in_flight = {
        i.reference
        for i in Issuance.objects.filter(state=State.REQUESTED, created_at__gte=timezone.now() - stale_after)
    }
    _report_strangers(report, upstream, in_flight)
    return report


def _settle_unknown_issuances(report, by_id, by_marker, stale_after, dry_run) -> None:
    cutoff = timezone.now() - stale_after
    pending = Issuance.objects.filter(state=State.UNKNOWN) | Issuance.objects.filter(
        state=State.REQUESTED, created_at__lt=cutoff
    )
    for issuance in pending.order_by("created_at"):
        found = by_id.get(issuance.api_key_id) if issuance.api_key_id else None
        found = found or by_marker.get(issuance.reference)
        label = f"{issuance.reference} “{issuance.name}”"
        if found is None:
            report.absent.append(label)
            if not dry_run:
                _set_state(issuance, State.ABSENT, Action.ISSUANCE_ABSENT, "no such key in Requesty's complete list")
            continue
        if dry_run:
            report.compensated.append(f"{label} -> {found.id}")
            continue
        try:
            requesty.delete_key(found.id)
        except requesty.NotFound:
            pass
        except requesty.RequestyError as exc:
            report.still_unknown.append(f"{label}: delete failed ({type(exc).__name__})")
            continue
        issuance.api_key_id = found.id
        report.compensated.append(f"{label} -> {found.id}")
        _set_state(issuance, State.COMPENSATED, Action.KEY_COMPENSATED, "found by reconciliation and deleted upstream")


def _set_state(issuance: Issuance, state: str, action: str, detail: str) -> None:
    with transaction.atomic():
        issuance.state = state
        issuance.save(update_fields=["state", "api_key_id", "updated_at"])
        audit.record(action, Outcome.SUCCESS, issuance=issuance, actor=None, detail=detail, **SYSTEM)


def _mark_deleted_outside(report, by_id, dry_run) -> None:
    for key in IssuedKey.objects.filter(status=Status.ACTIVE).select_related("issuance"):
        if key.api_key_id in by_id:
            continue
        report.deleted_upstream.append(f"{key.api_key_id} “{key.name}”")
        if not dry_run:
            lifecycle._mark_deleted_upstream(key, actor=None, detail="reconciliation: not in Requesty's key list")


def _offboard_inactive(report, dry_run) -> None:
    """Safety net for deactivations that bypassed signals (e.g. QuerySet.update)."""
    for user in get_user_model().objects.filter(is_active=False, issued_keys__status=Status.ACTIVE).distinct():
        if dry_run:
            report.offboarded.extend(k.api_key_id for k in user.issued_keys.filter(status=Status.ACTIVE))
            continue
        revoked, failed = lifecycle.offboard(user)
        report.offboarded.extend(k.api_key_id for k in revoked)
        report.still_unknown.extend(f"{k.api_key_id}: offboarding revoke failed" for k in failed)


def _report_strangers(report, upstream, in_flight: set[str]) -> None:
    records = {k.api_key_id: k for k in IssuedKey.objects.select_related("owner")}
    try:
        own_id = requesty.get_key("self").id
    except requesty.RequestyError:
        own_id = None
    for key in upstream:
        record = records.get(key.id)
        marker = MARKER.search(key.name)
        if record is None and key.id != own_id and not (marker and marker.group(1) in in_flight):
            report.unmanaged.append(f"{key.id} “{key.name}”")
        if key.permissions.get("manage") not in ("none", "") and key.id != own_id:
            if record is None or record.owner is None or not policy.is_portal_admin(record.owner):
                report.privileged.append(f"{key.id} “{key.name}” manage={key.permissions['manage']}")
