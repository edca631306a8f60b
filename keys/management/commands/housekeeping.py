"""Run all due scheduled work once (or forever with --loop). See keys/housekeeping.py."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from keys import housekeeping


class Command(BaseCommand):
    help = "Do all due scheduled work once and print a summary (docs/operations.md, 'Scheduled work')."

    def add_arguments(self, parser):
        parser.add_argument("--loop", type=int, metavar="SECONDS", help="run again every SECONDS, forever")
        parser.add_argument("--only", action="append", metavar="JOB", help="run only this job (repeatable)")

    def handle(self, *args, loop, only, **options):
        names = {job.name for job in housekeeping.jobs()}
        if only and set(only) - names:
            raise CommandError(
                f"Unknown job(s): {', '.join(sorted(set(only) - names))}. Jobs: {', '.join(sorted(names))}."
            )
        if loop is not None and loop < 1:
            raise CommandError("--loop needs at least 1 second.")
        if loop is None:
            failed = self._run(only)
            if failed:
                raise CommandError(f"{failed} job(s) failed; see above.")
            return
        while True:  # a sidecar: report failures and carry on, including a database that is away
            try:
                self._run(only)
            except Exception as exc:
                self.stderr.write(f"housekeeping run failed: {type(exc).__name__}: {exc}")
            close_old_connections()
            time.sleep(loop)

    def _run(self, only) -> int:
        failed = 0
        for outcome in housekeeping.run_once(only):
            line = f"{outcome.job}: {outcome.status}" + (f" — {outcome.summary}" if outcome.summary else "")
            if outcome.status == "failed":
                failed += 1
                self.stderr.write(line)
            else:
                self.stdout.write(line)
        return failed
