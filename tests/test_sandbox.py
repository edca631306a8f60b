"""`make run`'s command: demo users, and refusal outside sandbox mode."""

import sys

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from portal.accounts import permissions


def test_sandbox_creates_the_printed_demo_users(db, settings):
    settings.PORTAL_SANDBOX = True
    call_command("sandbox", "--no-serve")
    call_command("sandbox", "--no-serve")  # idempotent
    requester, admin = User.objects.get(username="requester"), User.objects.get(username="admin")
    assert requester.check_password("requester-pass") and admin.check_password("admin-pass")
    assert not permissions.is_portal_admin(requester) and not permissions.can_view_audit(requester)
    assert permissions.is_portal_admin(admin) and permissions.can_view_audit(admin)


def test_the_demo_admin_edits_spending_policies_and_onboarding_templates(db, settings):
    settings.PORTAL_SANDBOX = True
    call_command("sandbox", "--no-serve")
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    index = client.get("/admin/").content.decode()
    assert "permission to view or edit anything" not in index
    for path in ("/admin/keys/spendingpolicy/add/", "/admin/keys/onboardingtemplate/add/", "/admin/keys/issuedkey/"):
        assert client.get(path).status_code == 200, path
    onboarding = client.get("/onboarding/").content.decode()
    assert 'href="/admin/keys/onboardingtemplate/add/"' in onboarding


def test_sandbox_refuses_when_sandbox_mode_is_off(db, settings):
    settings.PORTAL_SANDBOX = False
    with pytest.raises(CommandError, match="PORTAL_SANDBOX"):
        call_command("sandbox", "--no-serve")
    assert not User.objects.exists()


def test_the_sandbox_runs_housekeeping_every_minute_beside_the_server(monkeypatch):
    """`make run` shows reminders in its console: housekeeping loops in a process of its own."""
    from keys.management.commands import sandbox

    started = []
    monkeypatch.setattr(sandbox.subprocess, "Popen", lambda args: started.append(args) or "process")
    assert sandbox.housekeeping_process() == "process"
    ((python, manage, *rest),) = started
    assert python == sys.executable and manage.endswith("manage.py") and rest == ["housekeeping", "--loop", "60"]


def test_onboarding_offers_djangos_admin_only_to_who_can_use_it(aclient):
    html = aclient.get("/onboarding/").content.decode()  # a portal admin without admin permissions
    assert "/admin/keys/onboardingtemplate/add/" not in html and "“Can add onboarding template” permission" in html
