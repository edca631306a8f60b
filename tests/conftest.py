"""Shared fixtures: named users, the stand-in Requesty over real HTTP, and the leak sweep."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from portal.accounts.access import audited_elsewhere
from standin import StandIn


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests are deselected (not skipped) on other databases: CI runs the suite on
    both and treats every skip as a failure."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    keep = [item for item in items if "postgres" not in item.keywords]
    config.hook.pytest_deselected(items=[item for item in items if "postgres" in item.keywords])
    items[:] = keep


@pytest.fixture(scope="session")
def standin_server():
    server = StandIn(host="127.0.0.1", port=0, admin_token="ADMIN-TOKEN-CANARY-6f1d2c").start()
    yield server
    server.stop()


@pytest.fixture
def standin(standin_server, settings):
    """The stand-in Requesty, emptied, with the portal pointed at it."""
    standin_server.reset()
    settings.REQUESTY_BASE_URL = standin_server.base_url
    settings.REQUESTY_ADMIN_TOKEN = "ADMIN-TOKEN-CANARY-6f1d2c"
    yield standin_server
    standin_server.reset()


@pytest.fixture
def canary(standin) -> str:
    """Every key the stand-in mints in this test has this secret, so a sweep can look for it."""
    value = "CANARY-SECRET-9b71e0c4d2"
    standin.secret_factory = lambda: value
    return value


@pytest.fixture
def debug_logs(caplog):
    """Capture every log record at DEBUG, urllib3 included."""
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "django", "keys", "requests"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _user(username: str, **extra) -> User:
    """Named users exist before the test starts: made without access-change events
    (portal/accounts/access.py), so each test's audit log starts empty."""
    with audited_elsewhere():
        return User.objects.create_user(
            username=username, email=f"{username}@example.com", password="pw-" + username, **extra
        )


@pytest.fixture
def requester(db) -> User:
    return _user("rita")


@pytest.fixture
def requester2(db) -> User:
    return _user("rob")


@pytest.fixture
def admin_user(db) -> User:
    """A portal admin through the permission (not a superuser)."""
    user = _user("ada")
    with audited_elsewhere():
        user.user_permissions.add(Permission.objects.get(codename="portal_admin"))
    return User.objects.get(pk=user.pk)  # fresh instance: no stale permission cache


@pytest.fixture
def superuser(db) -> User:
    return _user("sam", is_superuser=True, is_staff=True)


@pytest.fixture
def inactive_user(db) -> User:
    return _user("ivan", is_active=False)


@pytest.fixture
def rclient(requester) -> Client:
    client = Client()
    client.force_login(requester)
    return client


@pytest.fixture
def aclient(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


AUDIT_TABLES = ("keys_auditevent", "audit_auditclock")


@pytest.fixture(autouse=True)
def _audit_trigger_vs_flush(request):
    """On PostgreSQL the audit table and its clock refuse TRUNCATE (keys 0003, audit 0009), but
    pytest-django empties the database with TRUNCATE after each transactional test (live_server,
    browser tests). Switch their triggers off just for that flush; every test that uses the
    database switches them on again first, and puts back the clock's one row the flush took (an
    empty log has no disorder), whatever ran before it (--ff, --reuse-db)."""
    marker = request.node.get_closest_marker("django_db")
    transactional = (
        "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
        or bool(marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0])))
    )
    if not (transactional or marker or "db" in request.fixturenames):
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up first, so torn down (flushed) after this
    from django.db import connection

    is_pg = connection.vendor == "postgresql"
    if is_pg:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'"
                " AND tgrelid IN ('keys_auditevent'::regclass, 'audit_auditclock'::regclass)"
            )
            if cursor.fetchone()[0]:  # only then: ALTER TABLE locks the table until the test ends
                for table in AUDIT_TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            cursor.execute("INSERT INTO audit_auditclock (disorder_from, disorder_to) SELECT NULL, NULL "
                           "WHERE NOT EXISTS (SELECT 1 FROM audit_auditclock)")  # fmt: skip
    yield
    if not transactional:
        return
    # The flush empties the models' tables, not the database cache's (keys/usage.py keeps spend
    # figures there): empty it too, so no test sees another's.
    from django.core.cache import cache

    cache.clear()
    if is_pg:
        with connection.cursor() as cursor:
            for table in AUDIT_TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
