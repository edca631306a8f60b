"""Walk the audit log's hash chain; exit non-zero at the first broken link."""

import time

from django.core.management.base import BaseCommand, CommandError

from portal.audit import chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain, or print its head (--head) to keep a copy elsewhere."

    def add_arguments(self, parser):
        parser.add_argument("--head", action="store_true", help="print the latest sequence number and hash")
        parser.add_argument(
            "--widen-clock",
            action="store_true",
            help="note times found out of order in the audit clock (after a restore that skipped triggers)",
        )
        parser.add_argument(
            "--expect-head",
            metavar="SEQ:HASH",
            help="a head printed earlier by --head; reveals events removed from the end of the log",
        )

    def handle(self, *args, head, expect_head, widen_clock, **options):
        if head:
            latest = chain.head()
            self.stdout.write(f"{latest[0]}:{latest[1]}" if latest else "0:" + chain.GENESIS)
            return
        expected = None
        if expect_head:
            seq, _, digest = expect_head.partition(":")
            if not seq.isdigit() or len(digest) != 64:
                raise CommandError("--expect-head takes SEQ:HASH as printed by --head.")
            expected = (int(seq), digest)
        started = time.monotonic()
        verdict = chain.verify(expected, widen_clock=widen_clock)
        elapsed = time.monotonic() - started
        rate = f"{elapsed:.1f} s, {verdict.count / elapsed if elapsed else 0:,.0f} events/s"
        if not verdict.ok:
            raise CommandError(f"Audit chain broken after {verdict.count} good events ({rate}). {verdict.message}")
        self.stdout.write(self.style.SUCCESS(f"{verdict.message} ({rate})"))
