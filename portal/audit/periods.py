"""A period of the log (the filters' "since" and "until") as a range of `seq`, on PostgreSQL.

Pages run newest first by `seq`. A period alone has no index in that order: a month of a year-old
log of 1,000,000 events meant walking back through every event since it (140 ms), or sorting all of
the month's. But where times are in `seq` order (AuditClock says where they may not be), the
period's events are exactly those between its first and its last event by time, two probes of the
`created_at` index; the page then reads a page of rows. Nothing is dropped: the period's own
conditions stay on the query, the bounds only narrow it, and where order is not known they are left
off. SQLite filters by time alone.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection
from django.db.models import QuerySet, Subquery, Value
from django.db.models.functions import Greatest, Least
from django.utils import timezone

from .models import AuditClock, AuditEvent

SETTLED = timedelta(minutes=5)  # a period that ended this long ago gets no more events


def within(qs: QuerySet, since: datetime | None, until: datetime | None) -> QuerySet:
    """`qs`, already filtered to since <= created_at < until, also bounded by the period's range of
    seq where that is known to hold the same events; none of it if the period holds no event."""
    if connection.vendor != "postgresql" or (since is None and until is None):
        return qs
    probes = {}
    if since is not None:
        first = AuditEvent.objects.filter(created_at__gte=since).order_by("created_at", "seq")
        probes["first"] = Subquery(first.values("seq")[:1])
    if until is not None:
        last = AuditEvent.objects.filter(created_at__lt=until).order_by("-created_at", "-seq")
        probes["last"] = Subquery(last.values("seq")[:1])
    # One statement: the clock's one row, with the probes beside it.
    row = AuditClock.objects.annotate(**probes).values(*probes, "disorder_from", "disorder_to").first()
    if row is None:  # no clock row: order unknown
        return qs
    # Every event at or after `since` is in seq order when no disorder reaches past it: the first of
    # them by time is the first by seq, and the last by time before `until` the last by seq.
    ordered_after = since is not None and (row["disorder_to"] is None or since > row["disorder_to"])
    # Or every event before `until` is, when no disorder starts before it.
    ordered_before = until is not None and (row["disorder_from"] is None or until <= row["disorder_from"])
    if ordered_after:
        if row["first"] is None:
            return qs.none()  # nothing at or after `since`
        qs = qs.filter(seq__gte=row["first"])
    # An event appended after these probes (or timed by a host's clock a little behind) may still
    # fall in a period that reaches the present: bound only periods that ended a while ago.
    if (ordered_after or ordered_before) and until is not None and until <= timezone.now() - SETTLED:
        if row["last"] is None:
            return qs.none()  # nothing before `until`
        qs = qs.filter(seq__lte=row["last"])
    return qs


def noted(first: datetime | str, last: datetime | str, *, widen: bool = False) -> bool:
    """Does the audit clock cover times out of order from `first` to `last` (found by verify_audit's
    walk; ISO text on PostgreSQL)? With `widen`, make it cover them. No clock row, or SQLite: nothing
    relies on it, so yes."""
    if connection.vendor != "postgresql":
        return True
    first, last = (datetime.fromisoformat(t) if isinstance(t, str) else t for t in (first, last))
    row = AuditClock.objects.values_list("disorder_from", "disorder_to").first()
    if row is None or (row[0] is not None and row[0] <= first and row[1] >= last):
        return True
    if widen:  # LEAST and GREATEST ignore NULL; the clock's trigger refuses anything but widening
        AuditClock.objects.update(
            disorder_from=Least("disorder_from", Value(first)), disorder_to=Greatest("disorder_to", Value(last))
        )
    return widen
