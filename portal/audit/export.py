"""The audit log's exports, CSV and JSON Lines: every chained field of each event (the internal
row ids aside), its time in UTC and its hash, newest first, streamed.

Two paths write the same bytes. On PostgreSQL the database formats every line itself and streams
them through ``COPY (SELECT ...) TO STDOUT`` (psycopg's copy API), which this process only gathers
into chunks: the export runs at the speed of COPY, not of Python. Elsewhere (SQLite) Python formats
keyset batches of rows. tests/audit/test_export_paths.py holds the two to the same bytes.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from datetime import UTC

from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
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
# Each expression writes what the Python path writes for one field: csv.writer's quoting (only " ,
# CR and LF), neutralise(), isoformat() in UTC, f"{limit:.2f}", json.dumps(ensure_ascii=True).
_TIME = "replace(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') || '+00:00'"


def _neutral(value: str) -> str:
    return f"CASE WHEN left({value}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') THEN '''' || {value} ELSE {value} END"


def _csv_cell(column: str) -> str:
    quoted = f"'\"' || replace({_neutral(column)}, '\"', '\"\"') || '\"'"
    return f"CASE WHEN {column} ~ E'[\",\\r\\n]' THEN {quoted} ELSE {_neutral(column)} END"


_SQL = {  # field: (CSV cell, JSON value), for a row of plain values; every other field is a text column
    "seq": ("seq::text", "seq::text"),
    "time_utc": (_TIME, f"'\"' || {_TIME} || '\"'"),
    "monthly_limit": (
        f"coalesce({_neutral('monthly_limit::text')}, '')",
        "coalesce('\"' || monthly_limit || '\"', 'null')",
    ),
    "source_ip": ("coalesce(host(source_ip), '')", "coalesce('\"' || host(source_ip) || '\"', 'null')"),
    "upstream_status": ("coalesce(upstream_status::text, '')", "coalesce(upstream_status::text, 'null')"),
    "hash": ("hash", "'\"' || hash || '\"'"),
}


def _line(fmt: str, text_value) -> str:
    """One line of `fmt` as SQL: the fields as _SQL has them, text columns through `text_value`."""
    if fmt == "csv":
        return " || ',' || ".join(_SQL[f][0] if f in _SQL else text_value(f) for f in EXPORT_FIELDS)
    pairs = (f"'\"{f}\": ' || {_SQL[f][1] if f in _SQL else text_value(f)}" for f in EXPORT_FIELDS)
    return "'{' || " + " || ', ' || ".join(pairs) + " || '}'"


# Almost every row holds nothing to neutralise, quote or escape: its line is a plain concatenation.
# `plain_check` (the text columns, each after a \x01) tells which rows those are; the others take
# the expressions that handle anything (rows with hostile values). False alarms only cost time.
_CHECK = "chr(1) || " + " || chr(1) || ".join(f for f in EXPORT_FIELDS if f not in _SQL)
_NOT_PLAIN = {
    "csv": r"""plain_check ~ '[",\r\n]|\x01[-=+@\t\r]' OR monthly_limit < 0""",
    "jsonl": r"plain_check ~ '[^\x01\x20\x21\x23-\x5b\x5d-\x7e]'",
}
# to_json() escapes as json.dumps does below U+007F; ensure_ascii also escapes DEL and every other
# character as \uXXXX (a surrogate pair above U+FFFF).
_ASCII_ONLY = """(SELECT string_agg(CASE
    WHEN ascii(c) < 127 THEN c
    WHEN ascii(c) < 65536 THEN '\\u' || lpad(to_hex(ascii(c)), 4, '0')
    ELSE '\\u' || to_hex(55296 + ((ascii(c) - 65536) >> 10)) || '\\u' || to_hex(56320 + ((ascii(c) - 65536) & 1023))
  END, '' ORDER BY n) FROM regexp_split_to_table({line}, '') WITH ORDINALITY AS chars(c, n))"""
_ANY = {
    "csv": _line("csv", _csv_cell),
    "jsonl": _ASCII_ONLY.format(line=_line("jsonl", lambda f: f"to_json({f})::text")),
}
_PLAIN = {"csv": _line("csv", str), "jsonl": _line("jsonl", lambda f: f"'\"' || {f} || '\"'")}
_COPY_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_COPY_CONTROL = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def copy_statement(qs: QuerySet, fmt: str) -> str:
    """The COPY of `qs`'s rows as lines of `fmt`, newest first, with its filters' values bound."""
    check = RawSQL(_CHECK, ())  # noqa: S611 (constant SQL)
    rows = qs.order_by("-seq").annotate(plain_check=check).values_list(*_STORED, "plain_check")
    sql, params = rows.query.sql_with_params()
    line = f"CASE WHEN {_NOT_PLAIN[fmt]} THEN {_ANY[fmt]} ELSE {_PLAIN[fmt]} END"
    # Plain SQL: COPY is what streams rows at the database's speed; the filters are the ORM's own.
    query = f"SELECT {line} FROM ({sql}) AS export ORDER BY seq DESC"  # noqa: S608 (no user text)
    return connection.ops.compose_sql(f"COPY ({query}) TO STDOUT", params)


def copy_body(qs: QuerySet, fmt: str) -> Iterator[bytes]:
    statement = copy_statement(qs, fmt)
    with transaction.atomic(), connection.cursor() as cursor:
        # Plain SQL, for the first byte: PostgreSQL would plan a whole-log COPY as scan-then-sort
        # (seconds at a million events; walking the seq index streams at once) and JIT-compile its
        # long expressions first (half a second, no faster after); for this transaction only.
        cursor.execute("SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)")
        yield from _copied(cursor, statement, fmt)


def _copied(cursor, statement: str, fmt: str) -> Iterator[bytes]:
    with cursor.copy(statement) as copy:
        # The header goes out with the first rows: the first byte is the database's answer.
        rows, size = ([_csv_header()] if fmt == "csv" else []), 0
        for row in copy:  # one line per row, as COPY's text format escapes it
            rows.append(row)
            size += len(row)
            if size >= CHUNK_BYTES:
                yield _unescape(b"".join(rows), fmt)
                rows, size = [], 0
        if rows:
            yield _unescape(b"".join(rows), fmt)


def _csv_header() -> bytes:
    """The header as a COPY line (LF-ended), to go through _unescape with the rows."""
    return csv.writer(_Echo()).writerow(EXPORT_FIELDS).replace("\r\n", "\n").encode()


def _unescape(data: bytes, fmt: str) -> bytes:
    """COPY's text format ends each line with LF and escapes backslashes and control characters
    inside it; csv.writer ends lines with CRLF."""
    if fmt == "csv":
        data = data.replace(b"\n", b"\r\n")  # only line ends are raw LFs here
    if b"\\" in data:
        data = _COPY_ESCAPE.sub(lambda m: _COPY_CONTROL.get(m.group(1), m.group(1)), data)
    return data
