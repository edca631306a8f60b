"""Give every active key without an expiry its owner's policy lifetime, never sooner than 14 days
from now, set it in Requesty, and tell the owners (docs/operations.md, "Key expiry")."""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from keys import expiry, policy
from keys.models import IssuedKey
from portal.audit import chain
from portal.audit.models import AuditEvent

NOTICE = timedelta(days=14)


class Command(BaseCommand):
    help = "Give active keys without an expiry the policy's lifetime (at least 14 days from now)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")

    def handle(self, *args, dry_run, **options):
        now = timezone.now()
        keys = IssuedKey.objects.filter(status=IssuedKey.Status.ACTIVE, expires_at__isnull=True)
        told = defaultdict(list)
        changed = unconfirmed = 0
        for key in keys.select_related("owner", "issuance").order_by("pk"):
            pol = policy.resolve(key.owner) if key.owner is not None else _default_policy()
            if pol.max_key_days is None:
                self.stdout.write(f"{key.api_key_id} “{key.name}”: the owner's policy allows no expiry; unchanged")
                continue
            ends = max(key.created_at + timedelta(days=pol.max_key_days), now + NOTICE)
            self.stdout.write(f"{key.api_key_id} “{key.name}”: {'would expire' if dry_run else 'expires'} "
                              f"{expiry.describe(ends)}")  # fmt: skip
            if dry_run:
                changed += 1
                continue
            with transaction.atomic():
                updated = IssuedKey.objects.filter(pk=key.pk, status=IssuedKey.Status.ACTIVE, expires_at__isnull=True)
                if not updated.update(expires_at=ends, reminded_days=None):
                    continue  # changed meanwhile (extended, rotated, revoked)
                key.expires_at = ends
                chain.record(
                    AuditEvent.Action.KEY_EXPIRY_SET, AuditEvent.Outcome.SUCCESS, actor=None, issuance=key.issuance,
                    api_key_id=key.api_key_id, detail=f"expiry policy applied: expires {expiry.describe(ends)}",
                )  # fmt: skip
            changed += 1
            unconfirmed += not expiry.push(key)
            if key.owner is not None and key.owner.is_active and key.owner.email:
                told[key.owner.email].append(key)
        for email, owned in told.items():
            try:
                _tell(email, owned)
            except OSError as exc:  # the expiries stand; the reminders will reach them later
                self.stderr.write(f"Could not e-mail {email}: {exc}")
        verb = "would get" if dry_run else "got"
        self.stdout.write(
            f"{changed} key(s) {verb} an expiry; "
            f"{unconfirmed} not yet confirmed by Requesty (housekeeping retries); {len(told)} owner(s) told."
        )


def _default_policy() -> policy.Policy:
    """A key whose owner was deleted: the default lifetime."""
    return policy.Policy(None, None, None, "write", False, settings.PORTAL_MAX_KEY_DAYS or None)


def _tell(email: str, keys: list[IssuedKey]) -> None:
    lines = "\n".join(f"- “{k.name}” expires {expiry.describe(k.expires_at)}" for k in keys)
    body = (
        "The key portal now gives every API key an expiry, as your spending policy says. Your keys:\n\n"
        f"{lines}\n\nYou will be reminded before each date, and can extend a key (within your policy, or "
        f"with an admin's approval) or rotate it on its page: {settings.PORTAL_BASE_URL}/keys/\n"
    )
    send_mail("Your Requesty keys now expire", body, None, [email])
