"""The audit log's exports, CSV and JSON Lines: every chained field of each event (the internal
row ids aside), its time in UTC and its hash, newest first, streamed.

Two paths write the same bytes. On PostgreSQL the database writes the rows itself (COPY's own csv
format; JSON Lines built in SQL, a block of lines per COPY row) and streams them through ``COPY
(SELECT ...) TO STDOUT`` (psycopg's copy API), which this process only gathers into chunks: the
export runs at the speed of COPY, not of Python. Elsewhere (SQLite) Python formats keyset batches
of rows. tests/audit/test_export_paths.py holds the two to the same bytes.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
from collections.abc import Iterator
from datetime import UTC

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from .chain import CHAINED_FIELDS

EXPORT_BATCH = 2000
CHUNK_BYTES = 64 * 1024  # per write: a chunk per row would cost both ends CPU
_STORED = [f for f in CHAINED_FIELDS if f not in ("actor_id", "issuance_id")] + ["hash"]
EXPORT_FIELDS = ["time_utc" if f == "created_at" else f for f in _STORED]  # the columns, in order
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_response(qs: QuerySet, fmt: str) -> StreamingHttpResponse:
    """`qs` as a download: `fmt` is "csv" or "jsonl"."""
    body = copy_body(qs, fmt) if connection.vendor == "postgresql" else python_body(qs, fmt)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(body, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{"csv" if fmt == "csv" else "jsonl"}"'
    response["Cache-Control"] = "no-store"
    return response


# --- Python: keyset batches (any database) --------------------------------------------------------
def python_body(qs: QuerySet, fmt: str) -> Iterator[bytes]:
    rows = _rows(qs)
    lines = _csv_lines(rows) if fmt == "csv" else _jsonl_lines(rows)
    return (text.encode() for text in lines)


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
    """Send a few hundred lines per write, not one."""
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


# --- PostgreSQL: COPY -----------------------------------------------------------------------------
# What the Python path writes for each field, as SQL. CSV: COPY's own csv format quotes as
# csv.writer does (a field holding , " CR or LF, its quotes doubled; a lone \. only when a row has
# one field) but writes '' as "" and NULL as nothing, so an empty value goes out as NULL;
# neutralise() is a CASE on the first character; the line ends are the one thing left to Python.
# JSON Lines: the database writes each line as json.dumps does (", " and ": ", its escapes below
# U+007F), this process what ensure_ascii adds.
_UTC = "replace(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '')"  # then +00:00
_FORMULA_CODES = ", ".join(str(ord(c)) for c in _FORMULA_START)


def _neutral_text(column: str) -> str:
    """neutralise() of a text column, '' as NULL (ascii() is the first character's code, 0 for '')."""
    return (
        f"CASE WHEN ascii({column}) > 64 THEN {column} WHEN ascii({column}) IN ({_FORMULA_CODES}) "
        f"THEN '''' || {column} ELSE nullif({column}, '') END"
    )


_CSV = {  # every field that is not a text column (upstream_status is never negative)
    "seq": "CASE WHEN seq < 0 THEN '''' || seq::text ELSE seq::text END",
    "time_utc": f"{_UTC} || '+00:00'",
    "monthly_limit": "CASE WHEN monthly_limit < 0 THEN '''' || monthly_limit::text ELSE monthly_limit::text END",
    "source_ip": "host(source_ip)",
    "upstream_status": "upstream_status",
}
_JSON = {  # field: (before, value, after) in its JSON line
    "seq": ("", "seq::text", ""),
    "time_utc": ('"', _UTC, '+00:00"'),
    "monthly_limit": ("", "coalesce('\"' || monthly_limit::text || '\"', 'null')", ""),
    "source_ip": ("", "coalesce('\"' || host(source_ip) || '\"', 'null')", ""),
    "upstream_status": ("", "coalesce(upstream_status::text, 'null')", ""),
}
_TEXT = [f for f in EXPORT_FIELDS if f not in _JSON]


def _json_line(text_value) -> str:
    """One JSON line as SQL; `text_value(column)` is (before, value, after) of a text column. A
    balanced tree of || between the values and the text around them: a chain of thirty || would
    copy the growing line at every step."""
    parts, text = [], "{"
    for field in EXPORT_FIELDS:
        before, value, after = _JSON[field] if field in _JSON else text_value(field)
        parts += [f"'{text}\"{field}\": {before}'", value]
        text = f"{after}, "
    return _balanced([*parts, f"E'{text[:-2]}}}\\n'"])  # each line ends in LF


def _balanced(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return f"({_balanced(parts[:middle])} || {_balanced(parts[middle:])})"


# Almost no row's text holds a " \ or control character: its values go between quotes as they
# are. The others take to_json(), which escapes those as json.dumps does; what ensure_ascii adds
# (DEL and every non-ASCII character as \uXXXX) is done here, in _ensure_ascii.
_NEEDS_ESCAPING = "(" + " || ".join(_TEXT) + r") ~ '[\x01-\x1f\"\\]'"
_ESCAPED = _json_line(lambda f: ("", f"to_json({f})::text", ""))
_PLAIN = _json_line(lambda f: ('"', f, '"'))
_CSV_COLUMNS = ", ".join(_CSV[f] if f in _CSV else _neutral_text(f) for f in EXPORT_FIELDS)
_JSONL_LINE = f"CASE WHEN {_NEEDS_ESCAPING} THEN {_ESCAPED} ELSE {_PLAIN} END"
BLOCK = 64  # JSON Lines: the lines of this many seq numbers in one COPY row (tens of kilobytes)


def copy_statement(qs: QuerySet, fmt: str) -> str:
    """The COPY of `qs`'s rows in `fmt`, newest first, with its filters' values bound. CSV: a row
    per event, in COPY's csv format. JSON Lines: a row per BLOCK seq numbers, the lines of its
    events in one value, in COPY's binary format (the value as it is): a million rows read one by
    one cost this process more than the rest of the export."""
    # Unordered inside, so that PostgreSQL merges the subquery into the COPY's query: a subquery
    # with an ORDER BY of its own stays a step apart, and that step doubled the database's time.
    sql, params = qs.order_by().values_list(*_STORED).query.sql_with_params()
    # Plain SQL: COPY is what streams rows at the database's speed; the filters are the ORM's own.
    if fmt == "csv":
        query = f"SELECT {_CSV_COLUMNS} FROM ({sql}) AS export ORDER BY export.seq DESC"  # noqa: S608 (no user text)
        return connection.ops.compose_sql(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", params)
    # The blocks that hold events, found from the top down one index probe each (a gap in seq, as
    # a forged row may open, costs nothing), sorted (block numbers only), then each aggregated in
    # seq order from its own index range.
    table, per = connection.ops.quote_name(qs.model._meta.db_table), f"{BLOCK}.0"
    query = (
        "WITH RECURSIVE block(n) AS ("  # noqa: S608 (no user text)
        f"SELECT floor(max(seq) / {per})::bigint FROM {table} UNION ALL "
        f"SELECT (SELECT floor(max(seq) / {per})::bigint FROM {table} WHERE seq < block.n * {BLOCK}) "
        "FROM block WHERE block.n IS NOT NULL) "
        "SELECT lines FROM (SELECT n FROM block WHERE n IS NOT NULL ORDER BY n DESC) AS blocks "
        f"CROSS JOIN LATERAL (SELECT string_agg({_JSONL_LINE}, '' ORDER BY export.seq DESC) AS lines "
        f"FROM ({sql}) AS export WHERE export.seq >= n * {BLOCK} AND export.seq < (n + 1) * {BLOCK}) AS lines "
        "WHERE lines IS NOT NULL ORDER BY n DESC"
    )
    return connection.ops.compose_sql(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", params)


def copy_body(qs: QuerySet, fmt: str) -> Iterator[bytes]:
    try:
        statement = copy_statement(qs, fmt)
    except EmptyResultSet:  # a filter that matches nothing whatever the rows (none(), __in=[])
        yield from python_body(qs, fmt)
        return
    with transaction.atomic(), connection.cursor() as cursor:
        # Plain SQL, for the first byte: PostgreSQL would plan a whole-log COPY as scan-then-sort
        # (seconds at a million events; walking the seq index streams at once) and JIT-compile its
        # long expressions first (half a second, no faster after); for this transaction only.
        cursor.execute("SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)")
        yield from _copied(cursor, statement, fmt)


def _copied(cursor, statement: str, fmt: str) -> Iterator[bytes]:
    with cursor.copy(statement) as copy:
        if fmt == "csv":
            yield from _csv_chunks(copy)
        else:
            # Each row's one value as the bytes the database sent: text and bytea travel alike in
            # the binary format, so psycopg's bytea loader hands them over undecoded.
            copy.set_types(["bytea"])
            yield from _sliced(_ensure_ascii(block) for (block,) in copy.rows())


def _csv_chunks(copy) -> Iterator[bytes]:
    # The header goes out with the first row, at once: the first byte is the database's answer,
    # however few rows a filter lets through.
    head = csv.writer(_Echo()).writerow(EXPORT_FIELDS).encode()
    rows, size = [], 0
    for row in copy:  # one row per read (a CopyData message each), ending in LF
        rows.append(row)
        size += len(row)
        if size >= CHUNK_BYTES or head:
            yield head + _crlf(rows)
            head, rows, size = b"", [], 0
    if rows or head:
        yield head + _crlf(rows)


def _crlf(rows: list) -> bytes:
    """csv.writer ends lines with CRLF, COPY with LF; a line break inside a value stays as it is
    (quoted, on both paths)."""
    data = b"".join(rows)
    if data.count(b"\n") == len(rows):  # nothing but the line ends
        return data.replace(b"\n", b"\r\n")
    return b"".join(bytes(row)[:-1] + b"\r\n" for row in rows)


def _ensure_ascii(lines: bytes) -> bytes:
    """What json.dumps(ensure_ascii=True) escapes beyond to_json(): DEL and every non-ASCII
    character (only ever inside a string)."""
    if not lines.isascii():
        lines = lines.decode().encode("ascii", errors=_JSON_ESCAPE)
    return lines.replace(b"\x7f", b"\\u007f") if b"\x7f" in lines else lines


def _json_escape(error: UnicodeEncodeError) -> tuple[str, int]:
    return json.dumps(error.object[error.start : error.end])[1:-1], error.end


_JSON_ESCAPE = "portal.audit.json_escape"
codecs.register_error(_JSON_ESCAPE, _json_escape)


def _sliced(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The first block at once (the first byte), then chunks of CHUNK_BYTES (the last shorter)."""
    yield from itertools.islice(blocks, 1)
    pending, size = [], 0
    for block in blocks:
        pending.append(block)
        size += len(block)
        if size >= CHUNK_BYTES:
            data = b"".join(pending)
            cut = len(data) - len(data) % CHUNK_BYTES
            yield from (data[i : i + CHUNK_BYTES] for i in range(0, cut, CHUNK_BYTES))
            pending, size = [data[cut:]], len(data) - cut
    if size:
        yield b"".join(pending)
