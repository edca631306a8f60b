"""Who may do what, changed in Django's admin: a user's groups, direct permissions and flags, a
group's permissions, a password set, a user's deletion; each is one event in the hash-chained audit
log, appended in the same transaction as the change."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.utils import timezone

from portal.audit import admin as audit_admin
from portal.audit import chain
from tests.audit.helpers import admin_event, admin_post, appended, assert_one_chained_event, delete_selected, head_seq

USERS = "/admin/auth/user/"
GROUPS = "/admin/auth/group/"


def permission(codename: str) -> Permission:
    return Permission.objects.get(codename=codename)


def user_form(user: User, **changes) -> dict:
    """The admin's change form for `user` as stored, with `changes` (None: an unticked box)."""
    joined = timezone.localtime(user.date_joined)
    form = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on" if user.is_active else None,
        "is_staff": "on" if user.is_staff else None,
        "is_superuser": "on" if user.is_superuser else None,
        "groups": [g.pk for g in user.groups.all()],
        "user_permissions": [p.pk for p in user.user_permissions.all()],
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        **changes,
    }
    return {k: v for k, v in form.items() if v is not None}


def change_user(client: Client, user: User, **changes) -> None:
    admin_post(client, f"{USERS}{user.pk}/change/", user_form(user, **changes))


def test_adding_and_removing_groups_is_one_event(suclient, superuser, requester):
    engineering, contractors = Group.objects.create(name="Engineering"), Group.objects.create(name="Contractors")
    requester.groups.add(contractors)
    since = head_seq()
    change_user(suclient, requester, groups=[engineering.pk])
    assert list(requester.groups.all()) == [engineering]
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': groups: +Engineering -Contractors"


def test_superuser_and_active_flags_from_old_to_new(suclient, superuser, requester):
    since = head_seq()
    change_user(suclient, requester, is_superuser="on", is_staff="on")
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': is_staff: no -> yes; is_superuser: no -> yes"

    requester.refresh_from_db()
    since = head_seq()
    change_user(suclient, requester, is_superuser=None, is_active=None)
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': is_active: yes -> no; is_superuser: yes -> no"


def test_a_permission_granted_directly_is_one_event(suclient, superuser, requester):
    since = head_seq()
    change_user(suclient, requester, user_permissions=[permission("portal_admin").pk])
    assert User.objects.get(pk=requester.pk).has_perm("keys.portal_admin")
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': user_permissions: +keys.portal_admin"


def test_a_save_that_changes_no_access_appends_nothing(suclient, superuser, requester):
    requester.groups.add(Group.objects.create(name="Engineering"))
    requester.user_permissions.add(permission("view_audit_log"))
    since = head_seq()
    change_user(suclient, requester)
    change_user(suclient, requester, first_name="Rita", email="rita@new.example.com")
    assert appended(since) == []
    # ... while a change of access in the same kind of save does append.
    change_user(suclient, requester, user_permissions=[])
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': user_permissions: -audit.view_audit_log"


def test_adding_a_user_records_its_access(suclient, superuser):
    password = "Plaid-Otter-4471"
    form = {"username": "nina", "usable_password": "true", "password1": password, "password2": password}
    event = admin_event(suclient, f"{USERS}add/", form, "user.access_changed", superuser)
    assert event.detail == (
        "user 'nina' created: groups: none; user_permissions: none; is_active: yes; is_staff: no; is_superuser: no"
    )


def test_a_group_permission_change_is_one_event(suclient, superuser):
    group = Group.objects.create(name="Engineering")
    group.permissions.add(permission("view_audit_log"))
    since = head_seq()
    form = {"name": "Engineering", "permissions": [permission("view_audit_log").pk]}
    admin_post(suclient, f"{GROUPS}{group.pk}/change/", form)
    assert appended(since) == []  # nothing changed, nothing appended

    form["permissions"] = [permission("portal_admin").pk]
    event = admin_event(suclient, f"{GROUPS}{group.pk}/change/", form, "group.permissions_changed", superuser)
    assert set(group.permissions.values_list("codename", flat=True)) == {"portal_admin"}
    assert event.detail == "group 'Engineering': permissions: +keys.portal_admin -audit.view_audit_log"

    form = {"name": "Auditors", "permissions": [permission("view_audit_log").pk]}
    event = admin_event(suclient, f"{GROUPS}add/", form, "group.permissions_changed", superuser)
    assert event.detail == "group 'Auditors' created: permissions: +audit.view_audit_log"


def test_deleting_users_is_one_event_each(suclient, superuser, requester, requester2):
    requester.groups.add(Group.objects.create(name="Engineering"))
    event = admin_event(suclient, f"{USERS}{requester.pk}/delete/", {"post": "yes"}, "user.deleted", superuser)
    assert event.detail == (
        "user 'rita' deleted; it had groups: Engineering; user_permissions: none; "
        "is_active: yes; is_staff: no; is_superuser: no"
    )

    other = User.objects.create_user("ole")
    since = head_seq()
    selected = [requester2.pk, other.pk]
    delete_selected(suclient, USERS, selected)
    assert not User.objects.filter(pk__in=selected).exists()
    events = appended(since)
    assert [(e.action, e.detail.split(" deleted;")[0]) for e in events] == [
        ("user.deleted", "user 'rob'"),
        ("user.deleted", "user 'ole'"),
    ]
    assert chain.verify().ok


def test_a_failed_audit_append_undoes_the_access_change(suclient, monkeypatch, requester):
    """The memberships are saved after the user row (save_related): they roll back too."""
    engineering = Group.objects.create(name="Engineering")
    since = head_seq()

    def fails(*args, **kwargs):
        raise RuntimeError("audit append failed")

    monkeypatch.setattr(audit_admin.chain, "record", fails)
    with pytest.raises(RuntimeError, match="audit append failed"):
        change_user(suclient, requester, groups=[engineering.pk], is_superuser="on")
    requester.refresh_from_db()
    assert not requester.is_superuser and not requester.groups.exists()
    assert appended(since) == []


def test_a_password_set_by_an_admin_is_audited_without_it_or_its_hash(suclient, superuser, requester):
    old_hash = requester.password
    new_password = "Plaid-Otter-4471"
    form = {"usable_password": "true", "password1": new_password, "password2": new_password}
    event = admin_event(suclient, f"{USERS}{requester.pk}/password/", form, "user.password_changed", superuser)
    requester.refresh_from_db()
    assert requester.check_password(new_password)
    assert event.detail == "user 'rita': password changed by admin"

    # Other saves of this user (access changes included) do not carry it either.
    change_user(suclient, requester, is_staff="on")
    admin_post(suclient, f"{USERS}{requester.pk}/delete/", {"post": "yes"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM keys_auditevent")
        table = repr(cursor.fetchall())
    assert "user.access_changed" in table and "user.deleted" in table
    for secret in (new_password, old_hash, requester.password, *requester.password.split("$")[1:]):
        assert secret not in table
