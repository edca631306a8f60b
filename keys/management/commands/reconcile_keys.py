"""Settle the portal's records against Requesty's key list. Safe to run on a schedule."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from keys.reconcile import ListFailed, reconcile


class Command(BaseCommand):
    help = (
        "Resolve unknown issuances, mark keys deleted outside the portal, revoke keys of deactivated "
        "users, and report keys Requesty holds that the portal did not issue."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
        parser.add_argument(
            "--stale-minutes",
            type=int,
            default=10,
            help="treat issuances still 'requested' after this many minutes as unknown (default 10)",
        )

    def handle(self, *args, dry_run, stale_minutes, **options):
        try:
            report = reconcile(dry_run=dry_run, stale_after=timedelta(minutes=stale_minutes))
        except ListFailed as exc:
            raise CommandError(str(exc)) from None
        if report is None:
            self.stdout.write("Another reconciliation is running; nothing to do.")
            return
        self.stdout.write(("Dry run: nothing was changed.\n" if dry_run else "") + "\n".join(report.lines()))
