"""What the tests in tests/accounts share: a password sign-in and its failures, a single sign-on
through the test provider (tests/accounts/oidc_idp.py), and the audit events they leave."""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta
from decimal import Decimal

from axes.models import AccessAttempt
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db.models import F
from django.test import Client

from keys.models import SpendingPolicy
from portal.accounts.signals import SIGNED_IN_AT
from portal.audit.models import AuditEvent
from tests.accounts.oidc_idp import path_of, provider_login

PORTAL = "http://testserver"
HTMX = {"HTTP_HX_REQUEST": "true"}
ALICE = {
    "password": "alice-idp-pw",
    "sub": "00u-alice-1",
    "email": "alice@example.com",
    "name": "Alice Liddell",
    "groups": [],
}
# Debian's Chromium, as the browser tests (tests/browser/) drive it.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 5_000


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def call_command_output(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def age_session(client: Client, seconds: int) -> None:
    """Make this client's sign-in `seconds` old."""
    session = client.session
    session[SIGNED_IN_AT] = time.time() - seconds
    session.save()


# --- Passwords ------------------------------------------------------------------------------------
def fail_password(client: Client, username: str = "rita", times: int = 1, **extra):
    for _ in range(times):
        response = client.post("/accounts/login/", {"username": username, "password": "wrong-guess"}, **extra)
    return response


def password_sign_in(client: Client, username: str = "rita", **extra):
    return client.post("/accounts/login/", {"username": username, "password": "pw-" + username}, **extra)


def lockout_alert(response) -> str:
    match = re.search(
        r'<div class="alert" role="alert">(Too many failed sign-in attempts.*?)</div>', response.text, re.S
    )
    assert match, response.text
    return match.group(1)


def expire_lockout(settings) -> None:
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - timedelta(minutes=settings.PORTAL_SIGN_IN_LOCKOUT_MINUTES, seconds=1)
    )


# --- Single sign-on -------------------------------------------------------------------------------
def start(client: Client, next_url: str = "", **params) -> str:
    """The portal's "Sign in with ..." link: returns the provider's authorize URL."""
    query = {"next": next_url, **params} if next_url else params
    response = client.get("/oidc/authenticate/", query)
    assert response.status_code == 302, response.content[:300]
    return response["Location"]


def sso_sign_in(client: Client, login: str = "alice", password: str | None = None, next_url: str = "", **params):
    """A whole sign-in: the portal's redirect, the provider's login page, the portal's callback."""
    password = password or sso_password(login)
    back = provider_login(start(client, next_url, **params), login, password, PORTAL)
    return client.get(path_of(back))


def sso_password(login: str) -> str:
    return {"alice": ALICE["password"]}.get(login, f"{login}-idp-pw")


def policy_group(name: str) -> Group:
    group = Group.objects.create(name=name)
    SpendingPolicy.objects.create(
        group=group, max_key_limit=Decimal("50"), max_total_limit=Decimal("200"), max_active_keys=5
    )
    return group


def alice() -> User:
    return User.objects.get(oidc_identities__subject=ALICE["sub"])


def group_names(user: User) -> set[str]:
    return set(user.groups.values_list("name", flat=True))
