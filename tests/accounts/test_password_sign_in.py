"""Password sign-in and sign-out: the page, redirects, cookies, audit events (threat 7)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from portal.audit.models import AuditEvent


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


def test_password_sign_in_and_out_are_audited_without_sso(client, requester):
    client.post("/accounts/login/", {"username": "rita", "password": "nope"})
    client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    client.post("/accounts/logout/")
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", "actor_username", "detail"))
    assert actions == [
        ("auth.sign_in_failed", "anonymous", "password sign-in failed for username 'rita'"),
        ("auth.signed_in", "rita", "password"),
        ("auth.signed_out", "rita", ""),
    ]
