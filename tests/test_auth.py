"""Sign-in, sign-out, sessions, /healthz and redirects (threats 7 and 16)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client


def test_login_page_labels_and_button(client, db):
    html = client.get("/accounts/login/").content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert ">Sign in</button>" in html


def test_sign_in_and_out(client, requester):
    response = client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.get("/accounts/logout/").status_code == 405  # sign-out is a POST
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_is_an_alert(client, requester):
    response = client.post("/accounts/login/", {"username": "rita", "password": "nope"})
    assert response.status_code == 200 and 'role="alert"' in response.content.decode()


def test_inactive_user_cannot_sign_in(client, inactive_user):
    response = client.post("/accounts/login/", {"username": "ivan", "password": "pw-ivan"})
    assert response.status_code == 200 and client.get("/").status_code == 302


def test_deactivated_user_loses_access_at_once(rclient, requester):
    assert rclient.get("/keys/new/").status_code == 200
    User.objects.filter(pk=requester.pk).update(is_active=False)
    response = rclient.get("/keys/new/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_session_rotates_on_sign_in(client, requester):
    client.get("/accounts/login/")
    client.cookies["sessionid"] = "attacker-chosen"
    client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    assert client.cookies["sessionid"].value != "attacker-chosen"


def test_cookie_flags(client, requester, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    response = client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"}, secure=True)
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "/\\evil.com",
        "https:evil.com",
        "javascript:alert(1)",
        "%2F%2Fevil.com",
        " //evil.com",
        "https://evil.com/",
    ],
)
def test_next_cannot_redirect_off_site(client, requester, target):
    response = client.post(
        "/accounts/login/?next=" + target, {"username": "rita", "password": "pw-rita", "next": target}
    )
    location = response["Location"]
    assert response.status_code == 302
    parts = urlsplit(location.replace("\\", "/"))
    assert parts.scheme == "" and parts.netloc == "" and not location.startswith(("//", "/\\"))


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


def test_idle_sessions_end(rclient, settings, monkeypatch):
    import portal.idle

    settings.PORTAL_IDLE_TIMEOUT = 600
    assert rclient.get("/keys/new/").status_code == 200
    now = portal.idle.time.time()
    monkeypatch.setattr(portal.idle.time, "time", lambda: now + 300)
    assert rclient.get("/keys/new/").status_code == 200  # active: still signed in
    monkeypatch.setattr(portal.idle.time, "time", lambda: now + 300 + 601)
    response = rclient.get("/keys/new/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
