"""A period of the log as a range of seq (portal/audit/periods.py): the same events as filtering by
time alone, whatever order the log's times are in; an append never goes back in time; and on
PostgreSQL the trigger notes any event out of time order, whoever wrote it."""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction

from portal.audit import chain
from portal.audit.models import AuditClock, AuditEvent
from portal.audit.views import filtered
from tests.audit.helpers import event

START = datetime(2026, 1, 1, tzinfo=UTC)
migration = importlib.import_module("portal.audit.migrations.0009_audit_clock")


def written(times: list[datetime], first_seq: int = 1) -> list[AuditEvent]:
    """Events with these times, in this seq order, written as rows (as an older release, a script or
    a restore would): no chain.record, so nothing holds their times in order."""
    rows = [
        AuditEvent(seq=first_seq + i, created_at=t, action="mint.issued", outcome="success", key_name=f"k{i}",
                   actor_username="rita", prev_hash="0" * 64, hash="0" * 64)
        for i, t in enumerate(times)
    ]  # fmt: skip
    return AuditEvent.objects.bulk_create(rows)


def by_time(since: date | None, until: date | None) -> list[int]:
    """The period's events newest first, by their times alone (what the page must show)."""
    low = datetime.combine(since, datetime.min.time(), UTC) if since else None
    high = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC) if until else None
    events = AuditEvent.objects.order_by("-seq").values_list("seq", "created_at")
    return [seq for seq, t in events if (low is None or t >= low) and (high is None or t < high)]


DAYS = [None, *(date(2026, 1, d) for d in (1, 2, 3, 5, 8, 9, 10, 20))]


def assert_periods_match() -> None:
    for since in DAYS:
        for until in DAYS:
            data = {"since": since, "until": until, "own": True}
            assert list(filtered(data).order_by("-seq").values_list("seq", flat=True)) == by_time(since, until), data


def test_a_period_holds_the_same_events_in_order(db):
    written([START + timedelta(hours=6 * i) for i in range(40)])  # 1 to 10 January, in order
    assert_periods_match()


def test_a_period_holds_the_same_events_out_of_order(db):
    """Times out of seq order around 3-5 January (a clock stepped back, another host behind): the
    periods that reach into the disorder fall back to time alone and still match."""
    times = [START + timedelta(hours=6 * i) for i in range(40)]
    times[12], times[17] = times[17], times[12]  # 4 January 00:00 and 5 January 06:00 swapped
    times[30] = START - timedelta(days=3)  # one event from "before" the log
    written(times)
    assert_periods_match()


@pytest.mark.postgres
def test_the_trigger_notes_disorder_whoever_wrote_it(db):
    clock = AuditClock.objects.get()
    assert (clock.disorder_from, clock.disorder_to) == (None, None)
    written([START, START + timedelta(hours=1), START + timedelta(hours=3)])
    assert AuditClock.objects.values_list("disorder_from", "disorder_to").get() == (None, None)
    written([START + timedelta(hours=2)], first_seq=4)  # after 03:00 comes 02:00
    assert AuditClock.objects.values_list("disorder_from", "disorder_to").get() == (
        START + timedelta(hours=2),
        START + timedelta(hours=3),
    )
    written([START - timedelta(days=1)], first_seq=6)  # a gap at 5, then an earlier time again
    written([START + timedelta(days=5)], first_seq=5)  # filled later, later than its successor
    assert AuditClock.objects.values_list("disorder_from", "disorder_to").get() == (
        START - timedelta(days=1),
        START + timedelta(days=5),
    )


@pytest.mark.postgres
def test_the_migration_examines_the_log_already_written(db):
    times = [START + timedelta(hours=i) for i in range(10)]
    times[4], times[7] = times[7], times[4]
    written(times)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditclock DISABLE TRIGGER USER")  # the migration makes the row
        cursor.execute("DELETE FROM audit_auditclock")
        cursor.execute(migration.EXAMINE_SQL)
    assert AuditClock.objects.values_list("disorder_from", "disorder_to").get() == (times[7], times[4])
    AuditClock.objects.all().delete()
    assert list(filtered({"since": date(2026, 1, 1), "own": True})) == list(
        AuditEvent.objects.all()
    )  # no row: time alone


@pytest.mark.postgres
def test_an_ordered_period_is_read_by_seq(db):
    """The page's query reads from the period's last event back, not from the newest event."""
    written([START + timedelta(hours=6 * i) for i in range(40)])
    query = filtered({"since": date(2026, 1, 3), "until": date(2026, 1, 5)}).order_by("-seq")[:51]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        plan = query.explain()
    assert "seq >= 9" in plan and "seq <= 20" in plan, plan
    assert [e.seq for e in query] == list(range(20, 8, -1))


def test_an_append_is_held_back_to_its_predecessor_only_a_little(db, caplog):
    """A host a second behind writes the previous event's time; a clock stepped back an hour is not
    papered over: the real time is written, with a warning, and (PostgreSQL) the clock notes it."""
    with time_machine.travel(START + timedelta(hours=1), tick=False):
        first = event()
    with time_machine.travel(START + timedelta(hours=1) - timedelta(seconds=1), tick=False):
        held = event()
    assert held.created_at == first.created_at and not caplog.records
    with time_machine.travel(START, tick=False):
        stepped_back = event()
    assert stepped_back.created_at == START and "check this host's clock" in caplog.text
    with time_machine.travel(START + timedelta(hours=2), tick=False):
        event()
    assert chain.verify().ok
    if connection.vendor == "postgresql":
        assert AuditClock.objects.values_list("disorder_from", "disorder_to").get() == (START, first.created_at)
    assert_periods_match()


@pytest.mark.postgres
def test_the_trigger_compares_across_a_gap(db):
    written([START + timedelta(days=4)])
    written([START], first_seq=3)  # seq 2 missing (verify_audit reports that); 1 January after 5 January
    assert AuditClock.objects.values_list("disorder_from", "disorder_to").get() == (START, START + timedelta(days=4))
    assert list(filtered({"since": date(2026, 1, 1), "own": True}).values_list("seq", flat=True)) == [3, 1]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditclock SET disorder_from = NULL, disorder_to = NULL",
        "UPDATE audit_auditclock SET disorder_from = '2026-01-02 12:00+00'",
        "UPDATE audit_auditclock SET disorder_to = '2026-01-02+00'",
        "DELETE FROM audit_auditclock",
        "TRUNCATE audit_auditclock",
    ],
)
def test_the_clock_only_widens(db, sql):
    written([START + timedelta(days=2), START + timedelta(days=1), START + timedelta(days=3)])
    with pytest.raises(Exception, match="only widens"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditclock SET disorder_from = '2025-12-01+00', disorder_to = '2026-02-01+00'")
    assert AuditClock.objects.values_list("disorder_from", "disorder_to").get()[0] == datetime(2025, 12, 1, tzinfo=UTC)


@pytest.mark.postgres
def test_the_clock_is_one_row_that_only_the_trigger_writes(db):
    """A second row claiming no disorder cannot be put beside it; the trigger writes with its owner's
    rights (SECURITY DEFINER), so the portal's role needs no write right on the clock."""
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO audit_auditclock (id, disorder_from, disorder_to) VALUES (-1, NULL, NULL)")
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosecdef, proconfig FROM pg_proc WHERE proname = 'audit_note_disorder'")
        definer, config = cursor.fetchone()
    assert definer and any(c.startswith("search_path=pg_catalog") for c in config)


@pytest.mark.postgres
def test_verify_audit_finds_disorder_the_clock_missed_and_notes_it(db):
    """Out-of-order times the trigger did not see (as after a data-only restore with triggers off):
    verify_audit finds them in its walk and fails, naming them; with --widen-clock it notes them,
    and periods there fall back to time."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses pending FK checks
        cursor.execute("ALTER TABLE keys_auditevent DISABLE TRIGGER audit_note_disorder")
    for hours in (0, 2, 1, 3):  # the third event an hour before the second: more than HOLD_BACK
        with time_machine.travel(START + timedelta(hours=hours), tick=False):
            event()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE keys_auditevent ENABLE TRIGGER audit_note_disorder")
    assert AuditClock.objects.values_list("disorder_from", "disorder_to").get() == (None, None)
    verdict = chain.verify()
    assert not verdict.ok and "not noted in the audit clock" in verdict.message and verdict.count == 4
    assert "2026-01-01T01:00:00" in verdict.message and "2026-01-01T02:00:00" in verdict.message
    assert chain.verify(widen_clock=True).ok
    clock = AuditClock.objects.values_list("disorder_from", "disorder_to").get()
    assert clock == (START + timedelta(hours=1), START + timedelta(hours=2))
    assert chain.verify().ok
    assert_periods_match()
