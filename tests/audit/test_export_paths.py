"""The export's two paths write the same bytes: PostgreSQL's COPY (the database formats the rows)
and Python's keyset batches (SQLite, and the reference). Hostile values take the escaping paths
(COPY's csv quoting, to_json() and the ensure_ascii step for JSON Lines), plain ones the plain
line; both are compared with what Python writes for the same events."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db import connection

from portal.audit import export
from portal.audit.models import AuditEvent
from portal.audit.views import filtered
from tests.audit.helpers import HOSTILE, event, unprotected

TRICKY = [
    *HOSTILE,
    "",
    "plain-name",
    "=1+1",
    "\t=tab first",
    "\r=cr first",
    "tab\tinside",
    'a "quoted", comma',
    "comma, only",
    "new\nline",
    "cr\ronly",
    "back\\slash \\n \\\\ end\\",
    "control \x01\x07\x08\x0b\x0c\x1b\x7f",
    "nul \x00 byte",  # chain.record keeps NUL out of the database (PostgreSQL refuses it)
    "héllo wörld ñ € \u2028\u2029 \ufeff",
    "astral 😀 𝄞",
    "\\.",
    "'already quoted'",
    " leading space",
    # COPY's csv format quotes these itself, and a CASE on the first character neutralises:
    '"quote" first',
    ",comma first",
    "0 digit first",
    "#!$%&()*/:;<>?[]^_`{|}~ at 64 and below",
    "Abc, just above @",
    "élan, non-ASCII first",
    "😀 astral first",
    "trailing newline\n",
    "trailing cr\r",
    "\\",
    "a\x01b",
]


def _events(requester):
    for i, name in enumerate(TRICKY):
        event(actor=requester, key_name=name, detail=TRICKY[-1 - i], api_key_id=f"k-{i}")
    event(actor=None, key_name="no actor", monthly_limit=None, source_ip=None, upstream_status=None)
    event(actor=requester, monthly_limit=Decimal("12.5"), source_ip="2001:db8::1", upstream_status=201)
    event(actor=requester, monthly_limit=Decimal("0"), source_ip="10.1.2.3", manage="-read", completions="@x")


def _rows_with_hostile_columns():
    """Values no portal path writes, straight into the table: every text column hostile once (the
    hash too), then empty; a negative limit and a seq far below the others; whole seconds
    (isoformat drops the fraction) and a fraction ending in zeros (it keeps them)."""
    cursor = unprotected()
    columns = ["actor_username", "actor_email", "action", "outcome", "api_key_id", "manage", "completions", "detail"]
    times = ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.120000Z", "2026-01-02T03:04:05.000001Z"]
    for i, column in enumerate([*columns, "hash", *columns, "hash"]):
        seq = 1000 + i if i else -(10**15)  # far below: JSON Lines skips the gap, not walks it
        cursor.execute(
            "INSERT INTO keys_auditevent (seq, created_at, actor_username, actor_email, action, outcome, "  # noqa: S608
            "key_name, api_key_id, monthly_limit, manage, completions, detail, prev_hash, hash) "
            "VALUES (%s, %s, 'u', 'e', 'mint.issued', 'success', 'k', '', %s, '', '', '', 'p', 'h')",
            [seq, times[i % 3], Decimal("-1.50") if i % 2 else None],
        )
        value = '=x,"y"\n\u00e9' if i <= len(columns) else ""
        cursor.execute(f"UPDATE keys_auditevent SET {column} = %s WHERE seq = %s", [value, seq])  # noqa: S608


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_copy_writes_the_same_bytes_as_python(db, requester, fmt):
    _events(requester)
    _rows_with_hostile_columns()
    qs = AuditEvent.objects.all()
    expected = b"".join(export.python_body(qs, fmt))
    assert expected.count(b"\n") > len(TRICKY)
    assert b"".join(export.copy_body(qs, fmt)) == expected
    rita, events = AuditEvent.objects.filter(actor_username="rita", seq__lt=10), AuditEvent.objects
    for subset in [rita, events.filter(seq__gt=10**9), events.none()]:  # none(): a filter with no SQL
        assert b"".join(export.copy_body(subset, fmt)) == b"".join(export.python_body(subset, fmt))


@pytest.mark.postgres
@pytest.mark.parametrize("term", ["50%_off", "back\\slash", "it's", "née"])
def test_copy_binds_the_filters_values_as_the_orm_does(db, requester, term):
    """The COPY statement carries the ORM's filter values inline (COPY takes no parameters): LIKE
    wildcards, backslashes, quotes and accents in a search select the same events on both paths."""
    for name in ["50% off", "50%_off now", "back\\slash", "it's", "née", "nee", "plain"]:
        event(actor=requester, key_name=name)
    qs = filtered({"q": term, "own": True})
    expected = b"".join(export.python_body(qs, "jsonl"))
    assert expected.count(b"\n") == 1
    assert b"".join(export.copy_body(qs, "jsonl")) == expected


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_copy_streams_in_chunks_of_tens_of_kilobytes(db, requester, fmt):
    for i in range(300):
        event(actor=requester, key_name=f"key {i}", detail="x" * 400)
    chunks = list(export.copy_body(AuditEvent.objects.all(), fmt))
    # The first goes out as soon as the database has rows (a line, or a block of them).
    assert len(chunks) > 3 and 0 < len(chunks[0]) < export.CHUNK_BYTES
    assert all(export.CHUNK_BYTES <= len(c) < export.CHUNK_BYTES + 2000 for c in chunks[1:-1])


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_copy_walks_the_index_in_one_step(db, requester, fmt):
    """The plan the export's speed rests on: the rows in seq order straight from an index, with no
    sort of the rows and no subquery step between them and COPY (each cost seconds at a million
    events)."""
    event(actor=requester, key_name="k")
    statement = export.copy_statement(filtered({"own": True}).filter(seq__lt=10**9), fmt)
    query = statement[len("COPY (") : statement.rindex(") TO STDOUT")]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    if fmt == "csv":  # a row per event
        assert "Index Scan Backward" in plan and "Sort" not in plan and "Subquery Scan" not in plan, plan
    else:  # a row per block of seq numbers, the blocks sorted first, each read from its index range
        sort_keys = re.findall(r"Sort Key: (.*)", plan)
        assert plan.startswith("Nested Loop") and sort_keys == ["block.n DESC"], plan
        assert "Index Scan" in plan and "Subquery Scan" not in plan, plan


def test_the_response_uses_copy_only_on_postgresql(auclient, monkeypatch):
    """On PostgreSQL the download is COPY's, elsewhere Python's: each path, its own database."""
    event(key_name="k1")
    used = []
    for name in ("copy_body", "python_body"):
        real = getattr(export, name)
        monkeypatch.setattr(export, name, lambda qs, fmt, real=real, name=name: used.append(name) or real(qs, fmt))
    body = b"".join(auclient.get("/audit/export.csv").streaming_content)
    assert b"k1" in body
    assert used == (["copy_body"] if connection.vendor == "postgresql" else ["python_body"])


@pytest.mark.postgres
def test_a_download_stopped_half_way_leaves_the_connection_usable(db, requester):
    """A browser that goes away closes the stream mid-COPY: the COPY is cancelled, and the next
    request on this (persistent) connection works."""
    for i in range(400):
        event(actor=requester, key_name=f"key {i}", detail="y" * 300)
    body = export.copy_body(AuditEvent.objects.all(), "csv")
    assert next(body).startswith(b"seq,") and len(next(body)) >= export.CHUNK_BYTES
    body.close()
    assert AuditEvent.objects.filter(key_name="key 7").count() == 1
