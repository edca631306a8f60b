"""Access changes are audited whatever path made them (issue 16, item 7; portal/accounts/access.py):
the shell, `createsuperuser`, `changepassword`, a superuser's own `/admin/password_change/`, and
lifting a sign-in lockout. Changes in the user and group admins stay one event each
(tests/audit/test_admin_access_audit.py)."""

from __future__ import annotations

from datetime import timedelta

from axes.models import AccessAttempt
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db.models import F
from django.test import Client

from portal.audit.models import AuditEvent
from tests.accounts.helpers import fail_password, password_sign_in


def access_events() -> list[tuple[str, str, str]]:
    events = AuditEvent.objects.filter(
        action__in=["user.access_changed", "user.password_changed", "group.permissions_changed"]
    )
    return list(events.order_by("seq").values_list("action", "actor_username", "detail"))


def test_flags_changed_in_the_shell(requester):
    requester.is_superuser = requester.is_staff = True
    requester.save()
    requester.is_active = False
    requester.save(update_fields=["is_active"])
    requester.first_name = "Rita"
    requester.save()  # not about access: nothing
    assert access_events() == [
        ("user.access_changed", "system", "user 'rita': is_staff: no -> yes; is_superuser: no -> yes"),
        ("user.access_changed", "system", "user 'rita': is_active: yes -> no"),
    ]


def test_groups_and_permissions_changed_from_either_side(requester, requester2):
    team, perm = Group.objects.create(name="Engineering"), Permission.objects.get(codename="portal_admin")
    requester.groups.add(team)
    team.user_set.add(requester2)
    requester.user_permissions.add(perm)
    team.permissions.add(perm)
    perm.group_set.remove(team)
    team.user_set.clear()
    requester.user_permissions.remove(perm)
    assert [detail for _, _, detail in access_events()] == [
        "user 'rita': groups: +Engineering",
        "user 'rob': groups: +Engineering",
        "user 'rita': user_permissions: +keys.portal_admin",
        "group 'Engineering': permissions: +keys.portal_admin",
        "group 'Engineering': permissions: -keys.portal_admin",
        "user 'rita': groups: -Engineering",
        "user 'rob': groups: -Engineering",
        "user 'rita': user_permissions: -keys.portal_admin",
    ]
    assert {actor for _, actor, _ in access_events()} == {"system"}


def test_createsuperuser_and_changepassword(db, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-Long-and-unguessable-1")
    call_command("createsuperuser", interactive=False, username="root", email="root@example.com", verbosity=0)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "another-Long-password-2")
    call_command("changepassword", "root", stdout=open("/dev/null", "w"))
    assert access_events() == [
        (
            "user.access_changed",
            "system",
            "user 'root' created outside the admin, with a password: is_active: yes; is_staff: yes; is_superuser: yes",
        ),
        ("user.password_changed", "system", "user 'root': password changed outside the admin's user pages"),
    ]
    assert "another-Long-password-2" not in str(list(AuditEvent.objects.values_list()))


def test_a_superuser_changing_their_own_password_in_the_admin(superuser):
    client = Client()
    client.force_login(superuser)
    response = client.post(
        "/admin/password_change/",
        {"old_password": "pw-sam", "new_password1": "Fresh-and-long-pw-3", "new_password2": "Fresh-and-long-pw-3"},
    )
    assert response.status_code == 302
    (event,) = AuditEvent.objects.filter(action="user.password_changed")
    assert (event.actor_username, event.source_ip) == ("sam", "127.0.0.1")
    assert event.detail == "user 'sam': password changed outside the admin's user pages"


def test_signing_in_is_no_access_change(client, requester):
    assert password_sign_in(client).status_code == 302  # saves last_login
    assert access_events() == []


def _lock_out(client, settings) -> AccessAttempt:
    fail_password(client, times=settings.PORTAL_SIGN_IN_FAILURE_LIMIT)
    return AccessAttempt.objects.get()


def test_lifting_a_lockout_in_the_admin_is_audited(client, requester, superuser, settings):
    attempt = _lock_out(client, settings)
    admin = Client()
    admin.force_login(superuser)
    response = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not AccessAttempt.objects.exists()
    (event,) = AuditEvent.objects.filter(action="user.access_changed")
    assert event.actor_username == "sam" and event.detail.startswith("sign-in lockout lifted for username 'rita'")


def test_lifting_a_lockout_with_axes_commands_is_audited(client, requester, settings):
    _lock_out(client, settings)
    call_command("axes_reset_username", "rita", stdout=open("/dev/null", "w"))
    (event,) = AuditEvent.objects.filter(action="user.access_changed")
    assert event.actor_username == "system" and "after 5 failures" in event.detail


def test_axes_own_clean_ups_are_not_lockouts_lifted(client, requester, settings):
    fail_password(client, times=2)
    assert password_sign_in(client).status_code == 302  # the success resets the count
    attempt = _lock_out(Client(), settings)
    AccessAttempt.objects.filter(pk=attempt.pk).update(
        attempt_time=F("attempt_time") - timedelta(minutes=settings.PORTAL_SIGN_IN_LOCKOUT_MINUTES, seconds=1)
    )
    assert password_sign_in(Client()).status_code == 302  # expired rows are cleaned up
    assert not AccessAttempt.objects.exists()
    assert not AuditEvent.objects.filter(detail__startswith="sign-in lockout lifted").exists()
    assert User.objects.get(pk=requester.pk).is_active
