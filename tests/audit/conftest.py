"""Fixtures for the audit tests: an auditor (a "Portal admins" member) and a superuser, signed in."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from portal.accounts.access import audited_elsewhere


@pytest.fixture
def auditor(db) -> User:
    """A member of the "Portal admins" group the migration creates."""
    with audited_elsewhere():  # exists before the test: no access-change event
        user = User.objects.create_user("audrey", "audrey@example.com", "pw-audrey")
        user.groups.add(Group.objects.get(name="Portal admins"))
    return User.objects.get(pk=user.pk)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def auclient(auditor) -> Client:
    return signed_in(auditor)


@pytest.fixture
def suclient(superuser) -> Client:
    return signed_in(superuser)
