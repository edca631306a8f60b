"""The audit log's exports, CSV and JSON Lines: every chained field of each event (the internal
row ids aside), its time in UTC and its hash, newest first, streamed in keyset batches."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from .chain import CHAINED_FIELDS

EXPORT_BATCH = 2000
_STORED = [f for f in CHAINED_FIELDS if f not in ("actor_id", "issuance_id")] + ["hash"]
EXPORT_FIELDS = ["time_utc" if f == "created_at" else f for f in _STORED]  # the columns, in order
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_response(qs: QuerySet, fmt: str) -> StreamingHttpResponse:
    """`qs` as a download: `fmt` is "csv" or "jsonl"."""
    rows = _rows(qs)
    body = _csv_lines(rows) if fmt == "csv" else _jsonl_lines(rows)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(body, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{"csv" if fmt == "csv" else "jsonl"}"'
    response["Cache-Control"] = "no-store"
    return response


def _rows(qs: QuerySet) -> Iterator[dict]:
    """Newest first, in keyset batches: constant memory on any database, no server-side cursor."""
    last = None
    while True:
        batch = list((qs if last is None else qs.filter(seq__lt=last)).order_by("-seq").values(*_STORED)[:EXPORT_BATCH])
        for row in batch:
            row["time_utc"] = row.pop("created_at").astimezone(UTC).isoformat()
            if row["monthly_limit"] is not None:
                row["monthly_limit"] = f"{row['monthly_limit']:.2f}"
            yield row
        if len(batch) < EXPORT_BATCH:
            return
        last = batch[-1]["seq"]


class _Echo:
    def write(self, value: str) -> str:
        return value


def neutralise(value) -> str:
    """Spreadsheets run cells that start with = + - @ (or a tab/CR before one) as formulas."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _chunks(lines: Iterator[str], size: int = 500) -> Iterator[str]:
    """Send a few hundred lines per write, not one: a chunk per row costs both ends CPU."""
    buffer: list[str] = []
    for line in lines:
        buffer.append(line)
        if len(buffer) >= size:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def _csv_lines(rows: Iterator[dict]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    yield from _chunks(writer.writerow([neutralise(row[f]) for f in EXPORT_FIELDS]) for row in rows)


def _jsonl_lines(rows: Iterator[dict]) -> Iterator[str]:
    # ensure_ascii: U+2028 and friends stay escaped, so every record is exactly one line.
    yield from _chunks(json.dumps({f: row[f] for f in EXPORT_FIELDS}, ensure_ascii=True) + "\n" for row in rows)
