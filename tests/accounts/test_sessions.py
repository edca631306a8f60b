"""Sessions: who needs one, when it ends, and what a signed-in request reads (threat 16)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission, User
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.module_loading import import_string

BACKENDS = ["portal.accounts.backends.PasswordBackend", "portal.accounts.backends.OIDCBackend"]


def test_every_page_but_login_and_healthz_needs_sign_in(client, db):
    for path in ("/", "/keys/new/"):
        assert client.get(path).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_healthz_needs_no_session_or_host(db):
    client = Client(HTTP_HOST="10.0.0.7")  # a container probe's Host is not in ALLOWED_HOSTS
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


def test_healthz_reports_database_trouble(client, db, monkeypatch):
    from django.db import OperationalError

    import portal.health

    class DownConnection:
        def cursor(self):
            raise OperationalError("no route to database")

    monkeypatch.setattr(portal.health, "connection", DownConnection())
    assert client.get("/healthz").status_code == 503


def test_sandbox_banner_only_in_sandbox(rclient, settings):
    assert "Sandbox mode" not in rclient.get("/").content.decode()
    settings.PORTAL_SANDBOX = True
    assert "Sandbox mode" in rclient.get("/").content.decode()


@pytest.mark.parametrize("backend", BACKENDS)
def test_deactivated_user_loses_access_at_once(client, requester, backend):
    """Whichever backend signed them in: their next request is anonymous."""
    client.force_login(requester, backend=backend)
    assert client.get("/keys/new/").status_code == 200
    User.objects.filter(pk=requester.pk).update(is_active=False)
    response = client.get("/keys/new/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_idle_sessions_end(rclient, settings, monkeypatch):
    import portal.accounts.idle

    settings.PORTAL_IDLE_TIMEOUT = 600
    assert rclient.get("/keys/new/").status_code == 200
    now = portal.accounts.idle.time.time()
    monkeypatch.setattr(portal.accounts.idle.time, "time", lambda: now + 300)
    assert rclient.get("/keys/new/").status_code == 200  # active: still signed in
    monkeypatch.setattr(portal.accounts.idle.time, "time", lambda: now + 300 + 601)
    response = rclient.get("/keys/new/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- What a signed-in request reads: Django's database session, ModelBackend's user and permissions
def _fresh(user):
    return User.objects.get(pk=user.pk)  # a new object, as the next request loads: no permission cache


def test_permissions_answer_as_djangos_and_are_read_once_per_request(requester, requester2, django_assert_num_queries):
    audit_viewers = Group.objects.create(name="auditors")
    audit_viewers.permissions.add(Permission.objects.get(codename="view_audit_log"))
    requester.groups.add(audit_viewers)
    requester.user_permissions.add(Permission.objects.get(codename="portal_admin"))
    requester2.user_permissions.add(Permission.objects.get(codename="view_issuedkey"))

    user = _fresh(requester)
    perms = user.get_all_permissions()
    assert perms == {"keys.portal_admin", "audit.view_audit_log"}
    assert perms == ModelBackend().get_all_permissions(_fresh(requester))
    with django_assert_num_queries(0):  # asked again while the request lasts: read once
        assert user.has_perm("keys.portal_admin") and user.has_perm("audit.view_audit_log")
        assert not user.has_perm("keys.view_issuedkey")
    assert _fresh(requester2).get_all_permissions() == {"keys.view_issuedkey"}  # nobody else's
    requester.user_permissions.clear()
    assert _fresh(requester).get_all_permissions() == {"audit.view_audit_log"}  # the next request sees it


def test_inactive_users_have_no_permissions_and_superusers_all(requester, superuser):
    requester.user_permissions.add(Permission.objects.get(codename="portal_admin"))
    requester.is_active = False
    requester.save()
    assert not _fresh(requester).has_perm("keys.portal_admin")
    assert _fresh(superuser).get_all_permissions() == ModelBackend().get_all_permissions(_fresh(superuser))


def test_a_signed_in_request_reads_its_session_and_user_once_each(rclient):
    rclient.get("/")
    with CaptureQueriesContext(connection) as queries:
        assert rclient.get("/").status_code == 200
    sql = [q["sql"] for q in queries.captured_queries]
    assert sum("django_session" in q for q in sql) == 1 and sum('FROM "auth_user"' in q for q in sql) == 1


def test_an_expired_or_unknown_session_is_signed_out(rclient, requester):
    assert rclient.get("/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert rclient.get("/").status_code == 302
    rclient.force_login(requester)
    rclient.cookies["sessionid"] = "no-such-session-key-000000000000"
    assert rclient.get("/").status_code == 302


def test_a_session_whose_user_is_gone_is_anonymous(rclient):
    session = rclient.session
    session[SESSION_KEY] = str(10**9)
    session.save()
    assert rclient.get("/").status_code == 302


def test_sign_out_ends_the_session_for_every_copy_of_its_cookie(client, requester):
    """Sessions live in the database every worker reads: another tab, another worker or a stolen
    cookie is signed out with the one that signed out."""
    client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    copy = Client()
    copy.cookies["sessionid"] = client.cookies["sessionid"].value
    assert copy.get("/").status_code == 200
    client.post("/accounts/logout/")
    assert copy.get("/").status_code == 302
    assert not Session.objects.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_backends_load_active_users_only(requester, inactive_user, backend):
    get_user = import_string(backend)().get_user
    loaded = get_user(requester.pk)
    assert loaded == requester and loaded.last_login == _fresh(requester).last_login
    assert get_user(inactive_user.pk) is None
    assert get_user(10**9) is None


def test_a_session_ends_its_lifetime_after_sign_in_however_active(client, requester, settings):
    """The idle sign-out's last-seen writes save the session every minute; they must not push its
    end forward: a stolen cookie used now and then still dies SESSION_COOKIE_AGE after sign-in."""
    settings.SESSION_COOKIE_AGE = 90
    settings.PORTAL_IDLE_TIMEOUT = 3600
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
        assert client.get("/").status_code == 200
        clock.shift(timedelta(seconds=61))
        assert client.get("/").status_code == 200  # active, and the last-seen write saves the session
        assert 0 < client.cookies["sessionid"]["max-age"] <= 30  # the cookie keeps the same end
        clock.shift(timedelta(seconds=30))
        response = client.get("/")
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_every_sign_in_gets_a_fixed_end(rclient, settings):
    session = rclient.session
    assert abs(session.get_expiry_age() - settings.SESSION_COOKIE_AGE) <= 2
    assert session.get("_session_expiry")  # a fixed date, not a sliding age
