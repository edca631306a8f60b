"""The backends read a person's permissions in one query, with the same answer as Django's
ModelBackend: their own, their groups', all for a superuser, none when inactive."""

from __future__ import annotations

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission, User

from portal.accounts.backends import OIDCBackend, PasswordBackend
from portal.accounts.permissions import can_view_audit, is_portal_admin


def perm(label: str) -> Permission:
    app, codename = label.split(".")
    return Permission.objects.get(content_type__app_label=app, codename=codename)


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)  # no permissions cached on it


@pytest.fixture
def person(db) -> User:
    user = User.objects.create_user("perm-person")
    user.user_permissions.add(perm("keys.portal_admin"))
    both, audit = Group.objects.create(name="both"), Group.objects.create(name="auditors")
    both.permissions.add(perm("keys.portal_admin"), perm("auth.view_user"))
    audit.permissions.add(perm("audit.view_audit_log"))
    user.groups.add(both, audit)
    Group.objects.create(name="elsewhere").permissions.add(perm("auth.change_user"))
    return user


@pytest.mark.parametrize("backend", [PasswordBackend, OIDCBackend])
def test_the_same_set_as_model_backend(person, backend, django_assert_num_queries):
    expected = ModelBackend().get_all_permissions(fresh(person))
    assert expected == {"keys.portal_admin", "auth.view_user", "audit.view_audit_log"}
    user = fresh(person)
    with django_assert_num_queries(1):
        assert backend().get_all_permissions(user) == expected
        assert backend().get_all_permissions(user) == expected  # cached for the request


def test_superuser_has_every_permission_and_inactive_none(person):
    person.is_superuser = True
    person.save()
    assert PasswordBackend().get_all_permissions(fresh(person)) == ModelBackend().get_all_permissions(fresh(person))
    assert len(PasswordBackend().get_all_permissions(fresh(person))) == Permission.objects.count()
    person.is_superuser, person.is_active = False, False
    person.save()
    assert PasswordBackend().get_all_permissions(fresh(person)) == set()


def test_roles_come_from_own_or_group_permissions_and_cost_one_query(requester, django_assert_num_queries):
    user = fresh(requester)
    with django_assert_num_queries(1):
        assert not is_portal_admin(user) and not can_view_audit(user)
    group = Group.objects.create(name="audit-team")
    group.permissions.add(perm("audit.view_audit_log"))
    requester.groups.add(group)
    assert can_view_audit(fresh(requester)) and not is_portal_admin(fresh(requester))
    requester.user_permissions.add(perm("keys.portal_admin"))
    assert is_portal_admin(fresh(requester))
