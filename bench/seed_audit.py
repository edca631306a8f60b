"""Fill an empty audit log with realistic, correctly chained events, for bench/audit.py only.

Not a management command on purpose: synthetic events carry valid hashes, so in a real log they
would be indistinguishable from history. Django must be set up before this module is imported.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from portal.audit import chain
from portal.audit.models import AuditEvent

ACTIONS = [
    (AuditEvent.Action.MINT_REQUESTED, AuditEvent.Outcome.PENDING),
    (AuditEvent.Action.MINT_ISSUED, AuditEvent.Outcome.SUCCESS),
    (AuditEvent.Action.MINT_REJECTED, AuditEvent.Outcome.FAILURE),
    (AuditEvent.Action.MINT_DENIED, AuditEvent.Outcome.DENIED),
    (AuditEvent.Action.MINT_UNKNOWN, AuditEvent.Outcome.UNKNOWN),
]


def seed_audit(
    events: int,
    *,
    actors: int = 200,
    batch: int = 5000,
    seed: int = 1,
    progress: Callable[[int], None] | None = None,
    busy: tuple[int, datetime, datetime] | None = None,
) -> int:
    """Append `events` synthetic events, spread evenly over the last 365 days, by `actors` users
    (user0000, user0001...), to an empty audit log; the same `seed` gives the same rows. Returns
    the head's seq. `progress` is called with the number written after each batch. `busy` =
    (actor, since, until): every tenth event in that period is that actor's, so that on a small log
    the actor's period fills a page as it does on a large one; every other value stays the same."""
    if chain.head():
        raise ValueError("The audit log is not empty: seed_audit only fills a benchmark's empty database.")
    rng = random.Random(seed)
    seq, previous = 0, chain.GENESIS
    start = timezone.now() - timedelta(days=365)
    step = timedelta(days=365) / max(events, 1)
    while seq < events:
        rows = []
        for _ in range(min(batch, events - seq)):
            seq += 1
            action, outcome = rng.choice(ACTIONS)
            actor = rng.randrange(actors)
            created_at = start + step * seq
            if busy and busy[1] <= created_at < busy[2] and seq % 10 == 0:
                actor = busy[0]
            event = AuditEvent(
                seq=seq,
                created_at=created_at,
                actor_id=None,
                actor_username=f"user{actor:04d}",
                actor_email=f"user{actor:04d}@example.com",
                action=action,
                outcome=outcome,
                key_name=f"key-{rng.randrange(10**6):06d}",
                api_key_id=str(UUID(int=rng.getrandbits(128), version=4)),
                monthly_limit=Decimal(rng.randrange(1, 10000)) / 100,
                manage="none",
                completions="write",
                source_ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                upstream_status=201 if outcome == AuditEvent.Outcome.SUCCESS else None,
                prev_hash=previous,
            )
            event.hash = previous = chain.compute_hash(previous, event)
            rows.append(event)
        with transaction.atomic():
            AuditEvent.objects.bulk_create(rows)
        if progress:
            progress(seq)
    return seq
