"""The checks every system scenario and load run ends with: the invariant (docs/security.md I3
plus "no duplicate mints"), the leak sweeps (I1) over the database, the logs and the pages, and
what the server log says (500s, unhandled exceptions)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import zlib
from collections import Counter
from contextlib import suppress

from .browser import Client, PortalError
from .database import Database
from .harness import TIMEOUT, new_http

ADMIN_KEY_ID = "00000000-0000-4000-8000-000000000001"  # the admin token's own key in the stand-in


def make_canary() -> str:
    """A secret no real code path could produce by accident; long enough for partial matches."""
    return "CANARY-" + secrets.token_hex(20)


# --- the leak sweep over what lives outside the server process -------------------------------------
_TOKENISH = re.compile(r"[A-Za-z0-9_\-+/]{16,}={0,2}")


def _decodings(text: str):
    """The text, plus every base64 run in it decoded (and inflated when zlib-compressed): Django
    signs sessions, message cookies and form tokens as base64 of (possibly compressed) JSON."""
    yield text
    for match in _TOKENISH.finditer(text):
        run = match.group(0)
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                raw = decode(run + "=" * (-len(run) % 4))
            except (binascii.Error, ValueError):
                continue
            yield raw.decode("latin-1")
            with suppress(zlib.error):
                yield zlib.decompress(raw).decode("latin-1")


def contains_secret(text: str, canary: str) -> bool:
    """The canary, or a recognisable part of it (a truncated or partial secret), in `text` or in
    anything base64/zlib-encoded inside it."""
    needles = [canary, canary[-16:], canary[-32:-16]] if len(canary) >= 40 else [canary]
    return any(needle in variant for variant in _decodings(text) for needle in needles)


def sweep_database(db: Database, canary: str) -> list[str]:
    """Every row of every table, as text, through raw SQL (the decoders catch signed sessions)."""
    from psycopg import sql

    found = []
    with db.connect() as conn:
        for table in db.tables(conn):
            query = sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(table))
            for (row,) in conn.execute(query):
                if contains_secret(row, canary):
                    found.append(f"database table {table}")
                    break
    return found


def sweep_text(label: str, text: str, canary: str) -> list[str]:
    return [label] if contains_secret(text, canary) else []


def sweep_pages(client: Client, canary: str, paths=("/", "/keys/", "/keys/new/")) -> list[str]:
    """Fresh GETs of every page the user can reach: the fixed ones and each key's own page."""
    found = []
    seen = list(paths)
    with suppress(PortalError):
        seen += [f"/keys/{pk}/" for pk in client.keys().values()]
    for path in seen:
        response = client.get(path)
        if contains_secret(response.text, canary):
            found.append(f"page {path}")
    return found


def sweep_headers(client: Client, canary: str) -> list[str]:
    return ["response headers or cookies"] if any(contains_secret(h, canary) for h in client.headers_seen) else []


# --- the invariant -----------------------------------------------------------------------------------
def upstream_keys(standin_url: str) -> dict[str, str]:
    """The stand-in's keys (id -> name) through its control API; the admin token's key excluded."""
    response = new_http().get(f"{standin_url}/_standin/state", timeout=TIMEOUT)
    response.raise_for_status()
    return {k["id"]: k["name"] for k in response.json()["keys"] if k["id"] != ADMIN_KEY_ID}


_MARKER = re.compile(r"\[portal:([0-9a-f]{12})\]$")


def check_invariant(
    db: Database, upstream: dict[str, str], create_names: list[str] | None = None, *, settled: bool = True
) -> list[str]:
    """What must hold after reconciliation (an empty list means it holds):

    - every key the stand-in holds is an active portal key whose issuance is `issued` and has its
      `mint.issued` audit event (I3: nothing unaccounted for upstream);
    - every issuance in state `issued` has its key record and audit event, and every active key
      record still exists upstream (nothing lost in the other direction);
    - with `settled` (the reconciliation's list succeeded), no issuance is `requested`/`unknown`;
    - no duplicate mints: each nonce has one issuance, and the stand-in saw at most one create per
      issuance (its `[portal:<reference>]` marker), when `create_names` is given.
    """
    problems = []
    with db.connect() as conn:
        keys = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT k.api_key_id, k.status, i.state, i.id FROM keys_issuedkey k "
                "JOIN keys_issuance i ON i.id = k.issuance_id"
            )
        }
        issued_events = "SELECT DISTINCT issuance_id FROM keys_auditevent WHERE action = 'mint.issued'"
        audited = {row[0] for row in conn.execute(issued_events)}
        issued = [row[0] for row in conn.execute("SELECT id FROM keys_issuance WHERE state = 'issued'")]
        with_key = {row[2] for row in keys.values()}
        pending = conn.execute(
            "SELECT id, state, name FROM keys_issuance WHERE state IN ('requested', 'unknown')"
        ).fetchall()
        duplicates = conn.execute("SELECT nonce FROM keys_issuance GROUP BY nonce HAVING count(*) > 1").fetchall()
    for key_id, name in upstream.items():
        record = keys.get(key_id)
        if record is None:
            problems.append(f"upstream key {key_id} “{name}” is no portal key")
        elif record[:2] != ("active", "issued") or record[2] not in audited:
            problems.append(
                f"upstream key {key_id} “{name}” is recorded as {record[:2]}, audited={record[2] in audited}"
            )
    for issuance_id in issued:
        if issuance_id not in with_key or issuance_id not in audited:
            problems.append(f"issuance {issuance_id} is issued without its key record or mint.issued event")
    for key_id, (status, _state, _issuance) in keys.items():
        if status == "active" and key_id not in upstream:
            problems.append(f"active portal key {key_id} does not exist upstream")
    if settled:
        problems += [f"issuance {i.hex[:12]} “{name}” left {state}" for i, state, name in pending]
    problems += [f"nonce {n} has several issuances" for (n,) in duplicates]
    if create_names is not None:
        markers = Counter(m.group(1) for name in create_names if (m := _MARKER.search(name)))
        problems += [f"issuance {ref} was created upstream {n} times" for ref, n in markers.items() if n > 1]
    return problems


def state_counts(db: Database) -> dict[str, int]:
    """How many issuances are in each state."""
    with db.connect() as conn:
        return dict(conn.execute("SELECT state, count(*) FROM keys_issuance GROUP BY state ORDER BY state").fetchall())


def issuance(db: Database, name: str) -> dict:
    with db.connect() as conn:
        row = conn.execute(
            "SELECT id, state, api_key_id, upstream_status FROM keys_issuance WHERE name = %s", [name]
        ).fetchone()
        if row is None:
            return {}
        events = conn.execute("SELECT action FROM keys_auditevent WHERE issuance_id = %s ORDER BY seq", [row[0]])
        actions = [r[0] for r in events]
    return {"id": row[0], "state": row[1], "api_key_id": row[2], "upstream_status": row[3], "actions": actions}


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def access_log(text: str) -> list[tuple[str, str, int]]:
    """(method, path, status) of every request in gunicorn's access log lines."""
    return [(m["method"], m["path"], int(m["status"])) for m in _ACCESS.finditer(text)]


def server_errors(text: str) -> list[str]:
    """500s in the access log and unhandled exceptions Django logged ("Internal Server Error")."""
    found = [f"{method} {path} -> 500" for method, path, status in access_log(text) if status == 500]
    found += [line[:300] for line in text.splitlines() if "Internal Server Error" in line]
    return found


def log_records(text: str) -> list[dict]:
    """The portal's JSON log records among gunicorn's own lines."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            with suppress(ValueError):
                records.append(json.loads(line))
    return records
