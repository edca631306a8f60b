"""`make run`: the portal in sandbox mode, against the stand-in Requesty, on one command."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

# What the demo admin edits in Django's admin (the portal links there): spending policies and
# onboarding templates; the rest it may look at. Real deployments grant these per person.
DEMO_ADMIN_PERMISSIONS = [
    *(
        f"{verb}_{model}"
        for verb in ("view", "add", "change", "delete")
        for model in ("spendingpolicy", "onboardingtemplate")
    ),
    "view_issuance",
    "view_issuedkey",
    "view_approvalrequest",
    "view_group",
]

DEMO_USERS = [
    # username, password, admin?
    ("requester", "requester-pass", False),
    ("admin", "admin-pass", True),
]


def housekeeping_process(every: int = 60) -> subprocess.Popen:
    """`manage.py housekeeping --loop 60` beside the server, as a sidecar would run it in
    production, with this process's environment (sandbox settings, the console e-mail backend)."""
    manage = Path(settings.BASE_DIR) / "manage.py"
    return subprocess.Popen([sys.executable, str(manage), "housekeeping", "--loop", str(every)])  # noqa: S603


class Command(BaseCommand):
    help = "Migrate, create demo users, start the stand-in Requesty and serve the portal (sandbox only)."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="where the portal listens")
        parser.add_argument("--no-serve", action="store_true", help="prepare only (used by tests)")

    def handle(self, *args, addr, no_serve, **options):
        if not settings.PORTAL_SANDBOX:
            raise CommandError("Sandbox mode is off: set PORTAL_SANDBOX=true (make run does).")
        call_command("migrate", interactive=False, verbosity=0)
        self._demo_users()
        if no_serve:
            return
        from standin import StandIn

        upstream = urlsplit(settings.REQUESTY_BASE_URL)
        if upstream.hostname not in ("127.0.0.1", "localhost"):
            raise CommandError("In sandbox mode REQUESTY_BASE_URL must point at the stand-in on 127.0.0.1.")
        standin = StandIn(
            host="127.0.0.1", port=upstream.port or 8099, admin_token=settings.REQUESTY_ADMIN_TOKEN, control=True
        ).start()
        host, _, port = addr.rpartition(":")
        self.stdout.write(
            self.style.SUCCESS("\nRequesty key portal — sandbox mode\n")
            + f"  Stand-in Requesty: {standin.base_url}\n"
            + f"  Open:              http://localhost:{port}/keys/new/\n"
            + "  Sign in as a requester:  requester / requester-pass\n"
            + "  Sign in as an admin:     admin / admin-pass   (also sees the audit log at /audit/)\n"
            + "  Housekeeping (expiry, reminders, reconciliation) runs every minute; e-mails print here.\n"
            + "  Stop with Ctrl+C.\n"
        )
        os.environ.setdefault("DJANGO_RUNSERVER_HIDE_WARNING", "true")
        os.environ.setdefault("PORTAL_BASE_URL", f"http://localhost:{port}")  # links in reminder e-mails
        scheduled = housekeeping_process()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` stops the loop on `kill` too
        try:
            call_command("runserver", addr, use_reloader=False, skip_checks=True)
        finally:
            scheduled.terminate()
            scheduled.wait(timeout=10)
            standin.stop()

    def _demo_users(self) -> None:
        User = get_user_model()
        portal_admins = Group.objects.get(name="Portal admins")  # created by migration 0003
        for username, password, is_admin in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
            if created:
                user.set_password(password)
                user.is_staff = is_admin
                user.save()
                if is_admin:
                    user.groups.add(portal_admins)
            if is_admin:  # also for a sandbox database made before these permissions were granted
                user.user_permissions.add(*Permission.objects.filter(codename__in=DEMO_ADMIN_PERMISSIONS))
