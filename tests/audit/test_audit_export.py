"""Exports of the audit log (CSV, JSON Lines): exactly the filtered events, streamed in batches,
with spreadsheet formulas neutralised and the columns of the chain's fields."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta

from tests.audit.helpers import HOSTILE, event, seqs


def test_csv_export_parses_and_neutralises_formulas(auclient, requester):
    for name in HOSTILE:
        event(actor=requester, key_name=name, detail=name)
    response = auclient.get("/audit/export.csv")
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"] and "no-store" in response["Cache-Control"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    names = [r for r in rows if r["action"] == "mint.issued"]
    assert len(names) == len(HOSTILE)
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), value
        assert datetime.fromisoformat(row["time_utc"]).utcoffset() == timedelta(0)
    assert {r["key_name"] for r in names} >= {
        '\'=HYPERLINK("http://evil")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "line1\r\nline2",
    }


def test_export_columns_and_their_order_stay_as_they_were(auclient, requester):
    """Spreadsheets and scripts read these columns by name and position (derived from the chain's
    fields in portal/audit/export.py): the header and the JSON keys may not move."""
    event(actor=requester)
    columns = (
        "seq,time_utc,actor_username,actor_email,action,outcome,key_name,api_key_id,monthly_limit,manage,"
        "completions,source_ip,upstream_status,detail,hash"
    )
    body = b"".join(auclient.get("/audit/export.csv").streaming_content).decode()
    assert body.startswith(columns + "\r\n")
    lines = b"".join(auclient.get("/audit/export.jsonl?own=on").streaming_content).decode().splitlines()
    assert [",".join(json.loads(line)) for line in lines] == [columns, columns]  # the CSV export's event too


def test_jsonl_export_parses_line_by_line(auclient):
    for name in HOSTILE:
        event(key_name=name)
    body = b"".join(auclient.get("/audit/export.jsonl").streaming_content).decode()
    lines = body.split("\n")[:-1]
    records = [json.loads(line) for line in lines]
    assert len(records) == len(HOSTILE)
    assert [r["key_name"] for r in records] == HOSTILE[::-1]  # raw values: JSON needs no neutralising


def test_filtered_export_has_exactly_the_filtered_rows(auclient, requester, requester2):
    for i in range(30):
        event(actor=requester if i % 3 == 0 else requester2, key_name=f"n{i}")
    query = "actor=rita"
    shown = seqs(auclient.get("/audit/?" + query))
    rows = list(
        csv.DictReader(io.StringIO(b"".join(auclient.get("/audit/export.csv?" + query).streaming_content).decode()))
    )
    assert [int(r["seq"]) for r in rows] == shown
    assert all(r["actor_username"] == "rita" for r in rows)


def test_export_walks_batches(auclient, monkeypatch):
    import portal.audit.export

    monkeypatch.setattr(portal.audit.export, "EXPORT_BATCH", 7)
    for i in range(23):
        event(key_name=f"b{i}")
    body = b"".join(auclient.get("/audit/export.jsonl").streaming_content).decode()
    assert [json.loads(line)["seq"] for line in body.splitlines()] == list(range(23, 0, -1))
