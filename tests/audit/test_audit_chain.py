"""The hash chain and its storage: verify_audit names the first changed, removed or reordered
event, the log is append-only (model, admin, PostgreSQL trigger), and concurrent appends chain one
after another."""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client

from portal.audit import chain
from portal.audit.models import AuditEvent
from tests.audit.helpers import event, unprotected
from tests.keys.helpers import attempt
from tests.polling import wait_until


def five_events():
    return [event(key_name=f"chain{i}") for i in range(5)]


def verify_output(*args) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def verify_error(*args) -> str:
    with pytest.raises(CommandError) as info:
        call_command("verify_audit", *args, stdout=io.StringIO())
    return str(info.value)


def test_clean_chain_verifies(db):
    five_events()
    assert "5 events verified" in verify_output()
    assert "0 events verified" not in verify_output()


@pytest.mark.parametrize(
    "statements,named",
    [
        (["UPDATE keys_auditevent SET key_name = 'innocent' WHERE seq = 3"], "Event #3 was changed"),
        (["DELETE FROM keys_auditevent WHERE seq = 2"], "Event #2 is missing"),
        (
            [
                "UPDATE keys_auditevent SET seq = -2 WHERE seq = 2",
                "UPDATE keys_auditevent SET seq = 2 WHERE seq = 4",
                "UPDATE keys_auditevent SET seq = 4 WHERE seq = -2",
            ],
            "#2",
        ),
        # An attacker without the HMAC key deletes #3 and renumbers the rest: the link breaks.
        (["DELETE FROM keys_auditevent WHERE seq = 3", "UPDATE keys_auditevent SET seq = seq - 1 WHERE seq > 3"], "#3"),
    ],
    ids=["changed-field", "deleted-middle-row", "swapped-rows", "renumbered-rehashed-tail"],
)
def test_tampering_names_the_first_event_it_touched(db, statements, named):
    five_events()
    with unprotected() as cursor:
        for sql in statements:
            cursor.execute(sql)
    assert named in verify_error()


def test_dropped_tail_needs_the_recorded_head(db):
    five_events()
    head = verify_output("--head").strip()
    assert head.startswith("5:") and len(head) == 2 + 64
    with unprotected() as cursor:
        cursor.execute("DELETE FROM keys_auditevent WHERE seq >= 4")
    assert "3 events verified" in verify_output()  # the chain alone cannot tell
    assert "Events after #3 were removed" in verify_error("--expect-head", head)


def test_wrong_hmac_key_fails_verification(db, settings):
    five_events()
    settings.AUDIT_HMAC_KEY = "another-key"
    assert "Event #1 was changed" in verify_error()


# --- Append-only ----------------------------------------------------------------------------------
def test_the_model_refuses_updates_and_deletes(db):
    e = event()
    with pytest.raises(PermissionError):
        e.save()
    with pytest.raises(PermissionError):
        e.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().update(outcome="success")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE keys_auditevent SET outcome = 'success'",
        "DELETE FROM keys_auditevent",
        "TRUNCATE keys_auditevent CASCADE",
    ],
)
def test_postgresql_trigger_refuses_changes(db, sql):
    from django.db import DatabaseError

    event()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE keys_auditevent ENABLE TRIGGER USER")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEvent.objects.count() == 1


def test_admin_registration_is_read_only(superuser):
    client = Client()
    client.force_login(superuser)
    e = event()
    assert client.get("/admin/audit/auditevent/").status_code == 200
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert client.post(f"/admin/audit/auditevent/{e.pk}/delete/").status_code == 403
    page = client.get(f"/admin/audit/auditevent/{e.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page  # a view page, no save buttons
    assert client.post(f"/admin/audit/auditevent/{e.pk}/change/", {"outcome": "success"}).status_code == 403


# --- Concurrent appends (PostgreSQL) --------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_append_waiting_for_the_lock_chains_onto_what_committed_meanwhile():
    """The lock-then-read-head call (migration 0008) must read the head *after* the lock is
    granted: B starts while A holds the lock, and must follow A's event, not fork beside it."""
    import threading

    from django.db import connections

    a_holds, a_may_commit, results = threading.Event(), threading.Event(), {}

    def append(name, hold):
        try:
            with transaction.atomic():
                results[name] = event(key_name=name)
                if hold:
                    a_holds.set()
                    a_may_commit.wait(10)
        finally:
            connections.close_all()

    first = event(key_name="before")
    a = threading.Thread(target=append, args=("a", True))
    a.start()
    assert a_holds.wait(10)
    b = threading.Thread(target=append, args=("b", False))
    b.start()
    with connection.cursor() as cursor:  # wait until B is queued on the advisory lock

        def b_waits() -> bool:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return bool(cursor.fetchone()[0])

        wait_until(b_waits, timeout=10, interval=0.01, message="the second append never waited for the chain's lock")
    a_may_commit.set()
    a.join(10)
    b.join(10)
    assert (results["a"].seq, results["b"].seq) == (first.seq + 1, first.seq + 2)
    assert results["b"].prev_hash == results["a"].hash
    assert chain.verify().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgresql_transactions_are_read_committed_whatever_the_server_default():
    """The chain's lock-then-read and the mint's lock-then-count need READ COMMITTED."""
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION default_transaction_isolation = 'repeatable read'")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone()[0] == "read committed"
    finally:
        connection.close()  # the session setting goes with the connection


# --- The canonical form is a contract with every chain already written -----------------------------
def test_the_canonical_form_and_hash_are_pinned(settings):
    """Rows hashed by earlier releases must verify forever: this event's canonical form and HMAC
    were computed by the code before the audit app existed (keys/audit.py at d23c4db)."""
    settings.AUDIT_HMAC_KEY = "pinned-key"
    event = AuditEvent(
        seq=7,
        created_at=datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC),
        actor_id=3,
        actor_username="rita",
        actor_email="rita@example.com",
        action="mint.issued",
        outcome="success",
        issuance_id=uuid.UUID(int=7),
        key_name="laptop <b> \u202e",
        api_key_id="key-1",
        monthly_limit=Decimal("25"),
        manage="none",
        completions="read",
        source_ip="10.0.0.1",
        upstream_status=201,
        detail="d",
    )
    assert chain.canonical(event) == (
        '{"action":"mint.issued","actor_email":"rita@example.com","actor_id":3,"actor_username":"rita",'
        '"api_key_id":"key-1","completions":"read","created_at":"2026-11-01T12:00:00.123456+00:00",'
        '"detail":"d","issuance_id":"00000000-0000-0000-0000-000000000007","key_name":"laptop <b> \\u202e",'
        '"manage":"none","monthly_limit":"25.00","outcome":"success","seq":7,"source_ip":"10.0.0.1",'
        '"upstream_status":201}'
    )
    assert chain.compute_hash("a" * 64, event) == "474c96d165a4dd595bc79595507ca5dce84b4005e40879e996dd44432fd16f91"


def test_the_canonical_form_is_the_sorted_json_of_its_fields_for_any_values(db):
    """canonical() writes the JSON key by key (for speed): byte for byte what json.dumps of the
    fields' dict with sorted keys writes, for hostile text, missing values and every type."""
    from tests.audit.helpers import HOSTILE

    values = [*HOSTILE, "", "tab\tnul\x00del\x7f", "😀 \u2028 é", '"\\']
    for i, text in enumerate(values):
        e = event(key_name=text, detail=text[::-1], actor=None, api_key_id=text, monthly_limit=Decimal(i) / 3)
        e.issuance_id = uuid.UUID(int=i) if i % 2 else None
        data = {name: chain._canonical_value(getattr(e, name)) for name in chain.CHAINED_FIELDS}
        assert chain.canonical(e) == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@pytest.mark.parametrize("column", ["actor_username", "actor_email", "action", "detail", "source_ip", "created_at"])
def test_a_change_to_any_chained_column_is_named(db, column):
    five_events()
    value = {"source_ip": "10.9.9.9", "created_at": "2020-01-01 00:00:00+00:00"}.get(column, "forged")
    with unprotected() as cursor:
        cursor.execute(f"UPDATE keys_auditevent SET {column} = %s WHERE seq = 4", [value])  # noqa: S608
    assert "Event #4 was changed" in verify_error()


def test_verify_reads_the_canonical_text(db, django_user_model):
    """On PostgreSQL the walk reads the time, the limit and the issuance id as text made by SQL
    (chain._as_text), not as Python values: for awkward values it must be the very text the hash
    was made from, or a good chain would fail (or a changed one pass)."""
    from tests.audit.helpers import HOSTILE

    assert bool(chain._as_text()) == (connection.vendor == "postgresql")  # the path under test is taken
    moments = [
        datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2000, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 30, 0, 5, tzinfo=UTC),
        datetime(2031, 6, 1, 0, 0, 0, 10, tzinfo=UTC),
    ]
    limits = [None, Decimal("0"), Decimal("0.1"), Decimal("9999999999.99"), Decimal(1) / 3, Decimal("-5")]
    owner = django_user_model.objects.create_user("owner")
    for i, text in enumerate([*HOSTILE, "", "😀 \u2028 é"]):
        values = {"key_name": text, "detail": text[::-1], "api_key_id": text, "monthly_limit": limits[i % len(limits)]}
        if i % 2:  # with an issuance: its UUID is chained too
            values = {"issuance": attempt(owner, text[:100], str(limits[i % len(limits)] or 1)), "detail": text}
        with time_machine.travel(moments[i % len(moments)], tick=False):
            event(**values)
    walked = [chain._canonical_of(row[:-2]) for row in chain._walk(batch=3)]
    assert walked == [chain.canonical(e) for e in AuditEvent.objects.order_by("seq")]
    assert len(walked) == len(HOSTILE) + 2
    assert verify_output().startswith(f"{len(walked)} events verified")


@pytest.mark.postgres
def test_a_time_moved_before_year_one_is_a_change(db):
    """PostgreSQL's to_char writes no era: 2026-03-01 BC would read as 2026-03-01 AD, so the walk
    reads times outside years 1-9999 as nothing, and the hash no longer matches."""
    five_events()
    with unprotected() as cursor:
        cursor.execute("UPDATE keys_auditevent SET created_at = created_at - interval '4051 years' WHERE seq = 3")
        cursor.execute("SELECT to_char(created_at, 'YYYY BC') FROM keys_auditevent WHERE seq = 3")
        assert cursor.fetchone()[0].endswith("BC")
    assert "Event #3 was changed" in verify_error()


def test_a_limit_of_minus_zero_verifies(db):
    """The database keeps no -0.00: an event recorded with one must still verify."""
    event(monthly_limit=Decimal("-0"))
    event(monthly_limit=Decimal("-0.001"))
    assert "2 events verified" in verify_output()


def test_verify_reports_its_rate(db):
    five_events()
    assert re.fullmatch(r"5 events verified\. \(\d+\.\d s, [\d,]+ events/s\)\n", verify_output())
