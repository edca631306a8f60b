"""Deactivate a leaver processed outside the portal and revoke their keys upstream."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from keys import lifecycle


class Command(BaseCommand):
    help = "Deactivate USERNAME and revoke every active key they own; lists keys that could not be revoked."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if user.is_active:
            # The post_save signal would offboard too; the command does it itself to report results.
            User.objects.filter(pk=user.pk).update(is_active=False)
        revoked, failed = lifecycle.offboard(user)
        self.stdout.write(f"{username}: deactivated; {len(revoked)} key(s) revoked.")
        if failed:
            listing = "\n".join(f"  {k.api_key_id} “{k.name}”" for k in failed)
            raise CommandError(f"{len(failed)} key(s) could not be revoked; retry later or reconcile:\n{listing}")
