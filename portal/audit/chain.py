"""The audit trail: appending events to the hash chain, and verifying it.

Every state change of an issuance and every refusal goes through `record`. Each event stores
`hash = HMAC(AUDIT_HMAC_KEY, prev_hash || canonical(event))`; appends are serialised (a
PostgreSQL advisory lock, or SQLite's IMMEDIATE transactions) so the chain cannot fork.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import CharField, F, Func
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.utils import timezone

from . import periods
from .models import AuditEvent

if TYPE_CHECKING:
    from keys.models import Issuance

Action = AuditEvent.Action
Outcome = AuditEvent.Outcome
log = logging.getLogger(__name__)

GENESIS = "0" * 64
_LOCK_ID = 0x6B657973  # "keys": the advisory lock that serialises appends on PostgreSQL
CHAINED_FIELDS = (
    "seq",
    "created_at",
    "actor_id",
    "actor_username",
    "actor_email",
    "action",
    "outcome",
    "issuance_id",
    "key_name",
    "api_key_id",
    "monthly_limit",
    "manage",
    "completions",
    "source_ip",
    "upstream_status",
    "detail",
)


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the address the trusted proxies saw (PORTAL_TRUSTED_PROXY_HOPS)."""
    hops = settings.PORTAL_TRUSTED_PROXY_HOPS
    if hops > 0:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if len(forwarded) >= hops:
            return parse_ip(forwarded[-hops])
    return parse_ip(request.META.get("REMOTE_ADDR"))


def parse_ip(value: str | None) -> str | None:
    try:
        return ipaddress.ip_address(value).compressed if value else None
    except ValueError:
        return None


# --- Canonical form and hash ----------------------------------------------------------------------
def _canonical_value(value):
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if hasattr(value, "isoformat"):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)  # UUID


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)  # made once, not per event
_ORDER = sorted(range(len(CHAINED_FIELDS)), key=CHAINED_FIELDS.__getitem__)  # the fields as sort_keys puts them
_IN_ORDER = operator.itemgetter(*_ORDER)
# '{"action":%s,"actor_email":%s,...}': the keys as the encoder writes them, a slot for each value.
_FORM = "".join(("{" if n == 0 else ",") + json.dumps(CHAINED_FIELDS[i]) + ":%s" for n, i in enumerate(_ORDER)) + "}"
_quoted = json.encoder.encode_basestring_ascii  # what the encoder above writes for a str


def _json(value) -> str:
    """One value of the canonical form that is neither a str nor None, as the encoder writes it."""
    return int.__repr__(value) if value.__class__ is int else _ENCODER.encode(_canonical_value(value))


def _canonical_of(values) -> str:
    """The canonical form of the CHAINED_FIELDS' values, in that order (a model's or a row's):
    sorted-key, compact, ASCII JSON, filled into one format string (the same bytes as _ENCODER.encode
    of the dict, test_the_canonical_form_and_hash_are_pinned). Strs and None, most of what a verify
    walk reads, are written inline: this is a third of its time per event."""
    return _FORM % tuple(
        [_quoted(v) if v.__class__ is str else "null" if v is None else _json(v) for v in _IN_ORDER(values)]
    )


def canonical(event: AuditEvent) -> str:
    """The bytes the hash covers: every chained field, in a fixed order, as sorted-key JSON."""
    return _canonical_of([getattr(event, name) for name in CHAINED_FIELDS])


def _hmac(key: bytes, prev_hash: str, values) -> str:
    return hmac.digest(key, (prev_hash + _canonical_of(values)).encode(), hashlib.sha256).hex()


def compute_hash(prev_hash: str, event: AuditEvent) -> str:
    return _hmac(settings.AUDIT_HMAC_KEY.encode(), prev_hash, [getattr(event, name) for name in CHAINED_FIELDS])


# --- Appending ------------------------------------------------------------------------------------
def _clean(field: str, value):
    """Values as the database will return them: NUL-free, within the column's length."""
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        max_length = AuditEvent._meta.get_field(field).max_length
        return value[:max_length] if max_length else value
    if isinstance(value, Decimal):
        value = value.quantize(Decimal("0.01"))
        return value.copy_abs() if value.is_zero() else value  # the database keeps no -0.00
    return value


_FROM_ISSUANCE = object()


def record(
    action: str,
    outcome: str,
    *,
    actor=_FROM_ISSUANCE,
    issuance: Issuance | None = None,
    source_ip: str | None = None,
    upstream_status: int | None = None,
    detail: str = "",
    **values,
) -> AuditEvent:
    """Append one event. With an issuance, the key's name, limit, permissions and (unless `actor`
    is given) actor come from it; otherwise pass key_name / monthly_limit / manage / completions /
    api_key_id as keywords. `actor=None` records the portal itself ("system")."""
    if issuance is not None:
        values = {
            "key_name": issuance.name,
            "api_key_id": issuance.api_key_id,
            "monthly_limit": issuance.monthly_limit,
            "manage": issuance.manage,
            "completions": issuance.completions,
            **values,
        }
        actor = issuance.actor if actor is _FROM_ISSUANCE else actor
        source_ip = source_ip or issuance.source_ip
    actor = None if actor is _FROM_ISSUANCE else actor
    fields = {
        "action": action,
        "outcome": outcome,
        "actor_id": getattr(actor, "pk", None),
        "actor_username": getattr(actor, "username", "") if actor is not None else "system",
        "actor_email": getattr(actor, "email", "") or "",
        "issuance_id": issuance.pk if issuance is not None else None,
        "source_ip": parse_ip(source_ip),
        "upstream_status": upstream_status,
        "detail": detail,
        **values,
    }
    event = AuditEvent(**{name: _clean(name, value) for name, value in fields.items()})
    # Inside a caller's transaction (minting) the event commits or rolls back with it: no savepoint,
    # two statements fewer; a failed append fails the whole transaction, which is what we want.
    with transaction.atomic(savepoint=False):
        # From here to the commit every other append waits: keep it to a few round trips.
        last = _lock_and_read_head()
        event.seq, event.prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
        event.created_at = _time_after(last[2] if last else None)
        event.hash = compute_hash(event.prev_hash, event)
        event.save()  # always an INSERT (AuditEvent.save)
    return event


HOLD_BACK = timedelta(seconds=2)  # the most an event's time is held back to its predecessor's


def _time_after(previous: datetime | None) -> datetime:
    """Now, but never just before the previous event's time: another host's clock a little behind
    would otherwise put the log's times out of seq order (a period is a range of seq where they are
    in order, periods.py). A clock further behind than HOLD_BACK is not papered over: the real time
    is written, PostgreSQL's trigger notes the disorder, and periods there are filtered by time."""
    now = timezone.now()
    if previous is None or now >= previous:
        return now
    if previous - now <= HOLD_BACK:
        return previous
    log.warning(
        "Audit event timed %.1f s before the previous one: check this host's clock", (previous - now).total_seconds()
    )
    return now


def record_request(request: HttpRequest, action: str, outcome: str = "success", **kwargs) -> AuditEvent:
    """`record` for something the signed-in person did in this request: they are the actor and
    the request's client address (client_ip) the source. Other keywords as for `record`."""
    kwargs.setdefault("actor", request.user)
    return record(action, outcome, source_ip=client_ip(request), **kwargs)


def _lock_and_read_head() -> tuple[int, str, datetime] | None:
    """Serialise appends until the transaction ends and return the chain's head: its seq, hash and
    time. On PostgreSQL one call does both (keys 0008, audit 0009); SQLite's IMMEDIATE transaction
    already holds the database's write lock."""
    if connection.vendor != "postgresql":
        return AuditEvent.objects.order_by("-seq").values_list("seq", "hash", "created_at").first()
    with connection.cursor() as cursor:  # plain SQL: an advisory lock, then the head read after it, in one round trip
        cursor.execute("SELECT head_seq, head_hash, head_created_at FROM keys_audit_lock_head(%s)", [_LOCK_ID])
        row = cursor.fetchone()
    return (row[0], row[1], row[2]) if row else None


# --- Verifying ------------------------------------------------------------------------------------
@dataclass
class Verdict:
    ok: bool
    count: int
    message: str
    seq: int | None = None


_ROW = (*CHAINED_FIELDS, "prev_hash", "hash")  # seq first


def _as_text() -> dict:
    """On PostgreSQL, the columns whose Python values cost most to make (datetime, Decimal, UUID),
    read as the text their canonical values are: to_char's ISO form in UTC with microseconds (as
    isoformat(timespec="microseconds")), numeric(12, 2)'s two decimals (as f"{v:.2f}"), a UUID's
    hyphenated lower case (as str). test_verify_reads_the_canonical_text pins each against Python's."""
    if connection.vendor != "postgresql":
        return {}
    # to_char writes no era: a time moved before year 1 (or past 9999) must not read as a real one,
    # so outside the years Python can hold it reads as NULL, and the hash then does not match.
    iso = (
        "CASE WHEN %(expressions)s >= '0001-01-01 00:00:00+00' AND %(expressions)s < '10000-01-01 00:00:00+00' "
        """THEN to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') END"""
    )
    return {
        "created_at_text": Func(F("created_at"), template=iso, output_field=CharField()),
        "monthly_limit_text": Cast("monthly_limit", CharField()),
        "issuance_id_text": Cast("issuance_id", CharField()),
    }


def _walk(batch: int = 5000) -> Iterator[tuple]:
    """Every event as a tuple of _ROW's values, by seq, in keyset batches, without model instances:
    over a million events the walk is bound by Python's time per row."""
    text = _as_text()
    columns = [f"{name}_text" if f"{name}_text" in text else name for name in _ROW]
    events, last = AuditEvent.objects.annotate(**text).order_by("seq"), 0
    while True:
        rows = list(events.filter(seq__gt=last).values_list(*columns)[:batch])
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1][0]


def verify(expected_head: tuple[int, str] | None = None, *, widen_clock: bool = False) -> Verdict:
    """Walk the chain from the first event, in one pass; report the first event that was changed,
    removed or reordered. With `expected_head` (a (seq, hash) copied elsewhere earlier), also detect
    a truncated tail, which the chain alone cannot reveal. Also check that the audit clock notes any
    times found out of order (periods.py relies on it); with `widen_clock`, note them there."""
    key = settings.AUDIT_HMAC_KEY.encode()
    previous, expected_seq, count, last_seq = GENESIS, 1, 0, None
    # Times out of seq order: the earliest time that followed a later one, and the latest such later one.
    before, first_disorder, last_disorder = None, None, None
    for row in _walk():
        seq, prev_hash, digest = row[0], row[-2], row[-1]
        if seq != expected_seq:
            missing = f"Event #{expected_seq} is missing (removed); the next is #{seq}."
            return Verdict(False, count, missing, expected_seq)
        if _hmac(key, prev_hash, row[:-2]) != digest:
            return Verdict(False, count, f"Event #{seq} was changed: its hash does not match its contents.", seq)
        if prev_hash != previous:
            return Verdict(
                False,
                count,
                f"Event #{seq} does not follow event #{seq - 1}: events were removed, reordered or rewritten.",
                seq,
            )
        previous, expected_seq, count, last_seq = digest, expected_seq + 1, count + 1, seq
        when = row[1]  # created_at: ISO text on PostgreSQL (_as_text), which sorts as the times do
        if before is not None and when < before:
            first_disorder = when if first_disorder is None or when < first_disorder else first_disorder
            last_disorder = before if last_disorder is None or before > last_disorder else last_disorder
        before = when
    if expected_head is not None:
        seq, digest = expected_head
        if last_seq is None or last_seq < seq:
            last = last_seq or 0
            return Verdict(False, count, f"Events after #{last} were removed: the recorded head is #{seq}.", last + 1)
        recorded = AuditEvent.objects.filter(seq=seq).values_list("hash", flat=True).first()
        if recorded != digest:
            return Verdict(False, count, f"Event #{seq} does not match the recorded head hash.", seq)
    if first_disorder is not None and not periods.noted(first_disorder, last_disorder, widen=widen_clock):
        message = (
            f"Times out of order from {first_disorder} to {last_disorder} are not noted in the audit clock, so a page "
            "or export of a period there could miss events; verify_audit --widen-clock notes them."
        )
        return Verdict(False, count, message)
    return Verdict(True, count, f"{count} events verified.")


def head() -> tuple[int, str] | None:
    return AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
