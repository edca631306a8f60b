"""Label the keys made before the portal labelled keys in Requesty (owner, team, ...); see keys/labels.py."""

from django.core.management.base import BaseCommand, CommandError

from keys import labels, requesty


class Command(BaseCommand):
    help = "Set the portal's labels (owner, owner_email, team, portal_ref, template) on every active key lacking them."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list the keys that would be labelled; call nothing")

    def handle(self, *args, dry_run, **options):
        try:
            outcome = labels.label_due(dry_run=dry_run, limit=None)
        except requesty.RequestyError as exc:
            raise CommandError(f"Requesty's key list could not be read: {exc.message}") from None
        for key, portal in outcome.due:
            shown = ", ".join(f"{k}={v}" for k, v in portal.items() if v)
            self.stdout.write(f"{'would label' if dry_run else 'label'} {key.name} ({key.api_key_id}): {shown}")
        self.stdout.write(outcome.summary(dry_run))
        if outcome.failed:
            raise CommandError(f"{len(outcome.failed)} key(s) could not be labelled; run again later.")
