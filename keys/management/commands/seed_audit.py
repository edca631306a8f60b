"""Fill the audit log with realistic, correctly chained events: for benchmarks only."""

import random
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
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


class Command(BaseCommand):
    help = "Append N synthetic, hash-chained audit events spread over the last year (benchmarks only)."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, required=True)
        parser.add_argument("--actors", type=int, default=200)
        parser.add_argument("--batch", type=int, default=5000)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--force", action="store_true", help="append even if the log is not empty")
        parser.add_argument(
            "--benchmark-database",
            action="store_true",
            help="confirm this database is a throw-away benchmark copy (needed unless DEBUG or sandbox mode)",
        )

    def handle(self, *args, events, actors, batch, seed, force, benchmark_database, **options):
        if not (settings.DEBUG or settings.PORTAL_SANDBOX or benchmark_database):
            # Synthetic events carry valid hashes: in a real log they would be indistinguishable
            # from history. Refuse unless the operator says this is a benchmark database.
            raise CommandError(
                "seed_audit writes synthetic history; pass --benchmark-database on a throw-away database."
            )
        head = chain.head()
        if head and not force:
            raise CommandError("The audit log is not empty; seed_audit is for benchmark databases (use --force).")
        rng = random.Random(seed)
        seq, previous = head if head else (0, chain.GENESIS)
        start = timezone.now() - timedelta(days=365)
        step = timedelta(days=365) / max(events, 1)
        done = 0
        while done < events:
            rows = []
            for _ in range(min(batch, events - done)):
                seq += 1
                action, outcome = rng.choice(ACTIONS)
                actor = rng.randrange(actors)
                event = AuditEvent(
                    seq=seq,
                    created_at=start + step * (seq - (head[0] if head else 0)),
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
            done += len(rows)
            self.stdout.write(f"\r{done}/{events} events", ending="")
        self.stdout.write(self.style.SUCCESS(f"\nSeeded {events} events; head is #{seq}."))
