"""Sign-in, sign-out, sessions, sign-in throttling, /healthz and redirects (threats 7 and 16)."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db.models import F
from django.test import Client

from portal.audit.models import AuditEvent
from tests.leaks import sweep


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
    import portal.accounts.idle

    settings.PORTAL_IDLE_TIMEOUT = 600
    assert rclient.get("/keys/new/").status_code == 200
    now = portal.accounts.idle.time.time()
    monkeypatch.setattr(portal.accounts.idle.time, "time", lambda: now + 300)
    assert rclient.get("/keys/new/").status_code == 200  # active: still signed in
    monkeypatch.setattr(portal.accounts.idle.time, "time", lambda: now + 300 + 601)
    response = rclient.get("/keys/new/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- Password sign-in throttling (django-axes, keys/throttle.py) -----------------------------------
def _fail(client: Client, username: str = "rita", times: int = 1, **extra):
    for _ in range(times):
        response = client.post("/accounts/login/", {"username": username, "password": "wrong-guess"}, **extra)
    return response


def _sign_in(client: Client, username: str = "rita", **extra):
    return client.post("/accounts/login/", {"username": username, "password": "pw-" + username}, **extra)


def _lockout_alert(response) -> str:
    match = re.search(
        r'<div class="alert" role="alert">(Too many failed sign-in attempts.*?)</div>', response.text, re.S
    )
    assert match, response.text
    return match.group(1)


def test_repeated_failures_lock_the_sign_in(client, requester, settings):
    limit = settings.PORTAL_SIGN_IN_FAILURE_LIMIT
    assert limit == 5 and settings.PORTAL_SIGN_IN_LOCKOUT_MINUTES == 15  # the documented defaults
    response = _fail(client, times=limit - 1)
    assert response.status_code == 200 and "didn't match" in response.text and "Too many" not in response.text
    response = _fail(client)  # the limit-th failure locks
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in _lockout_alert(response)
    assert 'name="password"' in response.text  # still the sign-in page
    assert 0 < int(response["Retry-After"]) <= 15 * 60
    assert "no-store" in response["Cache-Control"]
    response = _sign_in(client)  # the right password is refused while locked
    assert response.status_code == 429 and "Too many failed sign-in attempts" in _lockout_alert(response)
    assert "_auth_user_id" not in client.session and client.get("/").status_code == 302


def test_the_lockout_says_when_to_try_again_and_not_whether_the_user_exists(requester):
    rita = _fail(Client(REMOTE_ADDR="10.0.0.1"), "rita", times=5)
    nobody = _fail(Client(REMOTE_ADDR="10.0.0.2"), "nobody-by-this-name", times=5)
    assert rita.status_code == nobody.status_code == 429
    assert rita["Retry-After"] == "900"
    alert = _lockout_alert(rita)
    until = AccessAttempt.objects.get(username="rita").attempt_time + timedelta(minutes=15)
    assert f'<time datetime="{until.isoformat()}">{until:%H:%M} UTC</time>' in alert and "about 15 minutes" in alert
    strip = lambda text: re.sub(r"<time .*?</time>", "", text)  # noqa: E731
    assert strip(alert) == strip(_lockout_alert(nobody))
    assert "rita" not in alert and "nobody" not in _lockout_alert(nobody)


def test_lockout_is_per_username_and_address(requester, requester2):
    _fail(Client(REMOTE_ADDR="10.0.0.1"), "rita", times=5)
    assert _sign_in(Client(REMOTE_ADDR="10.0.0.1"), "rita").status_code == 429
    assert _sign_in(Client(REMOTE_ADDR="10.0.0.2"), "rita").status_code == 302  # rita elsewhere
    assert _sign_in(Client(REMOTE_ADDR="10.0.0.1"), "rob").status_code == 302  # someone else there


def test_a_successful_sign_in_resets_the_count(client, requester):
    _fail(client, times=4)
    assert _sign_in(client).status_code == 302
    assert not AccessAttempt.objects.exists()
    client.post("/accounts/logout/")
    assert _fail(client, times=4).status_code == 200  # four more are not a lockout
    assert _sign_in(client).status_code == 302


def test_a_forged_forwarded_for_does_not_dodge_the_count(client, requester, settings):
    settings.PORTAL_TRUSTED_PROXY_HOPS = 0
    for i in range(5):
        response = _fail(client, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    assert response.status_code == 429
    assert _sign_in(client, HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 429
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["127.0.0.1"]


def test_behind_a_trusted_proxy_the_address_it_saw_counts(requester, settings):
    settings.PORTAL_TRUSTED_PROXY_HOPS = 1
    proxy = Client(REMOTE_ADDR="10.0.0.9")
    for i in range(5):  # whatever the client prepends, the proxy's own entry is the address
        response = _fail(proxy, HTTP_X_FORWARDED_FOR=f"198.18.0.{i}, 203.0.113.5")
    assert response.status_code == 429
    assert _sign_in(proxy, HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
    assert _sign_in(proxy, HTTP_X_FORWARDED_FOR="203.0.113.6").status_code == 302  # another client


def test_refused_attempts_add_no_audit_events_and_never_reach_the_password_check(client, requester, monkeypatch):
    from portal.accounts import sso

    _fail(client, times=5)
    failed = AuditEvent.objects.filter(action="auth.sign_in_failed")
    assert failed.count() == 6  # five failures and the lockout
    (locked,) = failed.filter(detail__contains="locked out")
    assert locked.detail.startswith("password sign-in locked out for username 'rita' from this address after 5")
    assert locked.outcome == "denied" and locked.source_ip == "127.0.0.1" and locked.actor_username == "anonymous"
    checked = []
    monkeypatch.setattr(sso.PasswordBackend, "authenticate", lambda *a, **k: checked.append(1))
    attempt = AccessAttempt.objects.get()
    for _ in range(10):
        assert _fail(client).status_code == 429
        assert _sign_in(client).status_code == 429
    assert AuditEvent.objects.count() == 6 and checked == []
    after = AccessAttempt.objects.get()  # not recorded, so the cool-off does not move
    assert (after.failures_since_start, after.attempt_time) == (5, attempt.attempt_time)
    assert call_command_output("verify_audit").startswith("6 events verified")


def call_command_output(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _expire_lockout(settings):
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - timedelta(minutes=settings.PORTAL_SIGN_IN_LOCKOUT_MINUTES, seconds=1)
    )


def test_the_lockout_ends_after_the_cool_off(client, requester, settings):
    _fail(client, times=5)
    assert _sign_in(client).status_code == 429
    _expire_lockout(settings)
    assert _sign_in(client).status_code == 302
    assert not AccessAttempt.objects.exists()


def test_break_glass_is_throttled_and_works_after_the_cool_off(client, superuser, settings):
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "portal", "sso-client-secret"
    for name in ("AUTHORIZATION", "TOKEN", "JWKS"):  # SSO on, without any provider call
        setattr(settings, f"OIDC_{name}_ENDPOINT", f"https://idp.example.com/{name.lower()}")
    settings.OIDC_ONLY = True
    response = _fail(client, "sam", times=5)
    assert response.status_code == 429 and "Break-glass sign-in" in response.text
    _lockout_alert(response)
    assert _sign_in(client, "sam").status_code == 429
    _expire_lockout(settings)
    assert _sign_in(client, "sam").status_code == 302 and client.get("/").status_code == 200
    assert "break-glass" in AuditEvent.objects.filter(action="auth.signed_in").get().detail


def test_single_sign_on_is_never_counted_or_refused(rf, db):
    from django.contrib.auth import authenticate
    from django.contrib.auth.signals import user_login_failed

    request = rf.post("/oidc/callback/")
    for _ in range(10):  # what a failed authenticate() from the SSO callback sends
        user_login_failed.send(__name__, credentials={"nonce": "n", "code_verifier": "v"}, request=request)
    assert not AccessAttempt.objects.exists()
    # Even a record that would match an SSO call (no username, this address) does not refuse it.
    AccessAttempt.objects.create(username=None, ip_address="127.0.0.1", failures_since_start=99, user_agent="x")
    request = rf.get("/oidc/callback/", REMOTE_ADDR="127.0.0.1")
    assert authenticate(request, nonce="n", code_verifier="v") is None  # SSO is off here: nobody signs in
    assert not getattr(request, "portal_sign_in_blocked", False)


def test_the_attempted_password_and_csrf_token_are_stored_nowhere(requester, debug_logs):
    canary = "PASSWORD-CANARY-3f9a1c"
    client = Client(enforce_csrf_checks=True)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get("/accounts/login/").text).group(1)
    responses = [
        client.post("/accounts/login/", {"username": "rita", "password": canary, "csrfmiddlewaretoken": token})
        for _ in range(6)
    ]
    assert [r.status_code for r in responses] == [200] * 4 + [429] * 2
    assert sweep(canary, logs=debug_logs, responses=responses) == []
    assert sweep(token) == []
    post_data = AccessAttempt.objects.get().post_data
    assert "password=********************" in post_data and "csrfmiddlewaretoken=********************" in post_data


def test_admins_see_and_clear_lockouts(client, requester, superuser):
    _fail(client, times=5)
    admin = Client()
    admin.force_login(superuser)
    page = admin.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and "rita" in page.text
    assert "Access attempts" in admin.get("/admin/").text
    call_command_output("axes_reset_username", "rita")
    assert _sign_in(client).status_code == 302
    client.post("/accounts/logout/")
    _fail(client, times=5)
    call_command_output("axes_reset")
    assert _sign_in(client).status_code == 302


def test_unknown_usernames_are_audited_up_to_a_bound_per_address_real_accounts_always(
    client, requester, settings, caplog
):
    """Guessing usernames costs nothing, so those failures are bounded per address (junk must not
    queue every mint behind the chain's lock); failures for real accounts never are, so noise
    cannot hide a guess at a real password."""
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 3
    for n in range(6):
        response = client.post("/accounts/login/", {"username": f"nobody{n}", "password": "guess"})
        assert response.status_code == 200 and 'role="alert"' in response.content.decode()
    failed = AuditEvent.objects.filter(action="auth.sign_in_failed")
    assert failed.count() == 4  # the bound, and one saying it was reached
    assert failed.filter(detail__startswith="[unknown username] [bound reached]").count() == 1
    assert all(e.detail.startswith("[unknown username] ") for e in failed)
    assert sum("Audit bound reached" in r.getMessage() for r in caplog.records) == 2
    for _ in range(3):  # a real account's failures, from the same address: every one recorded
        client.post("/accounts/login/", {"username": "rita", "password": "guess"})
    assert failed.filter(detail__contains="for username 'rita'").count() == 3
    Client(REMOTE_ADDR="10.9.8.7").post("/accounts/login/", {"username": "x", "password": "y"})
    assert failed.filter(source_ip="10.9.8.7").count() == 1  # another address has its own bound


def test_the_bound_note_is_written_once_even_if_parallel_events_overshoot(db, settings):
    from portal.audit import bounds, chain

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 2
    args = ("auth.sign_in_failed", "denied")
    for n in range(3):  # as if parallel requests had all counted below the bound
        chain.record(*args, actor=None, source_ip="10.1.1.1", detail=f"[unknown username] 'n{n}'")
    kw = {"kind": "unknown username", "actor": None, "source_ip": "10.1.1.1"}
    note = bounds.record_noise(*args, detail="'late'", **kw)
    assert note.detail.startswith("[unknown username] [bound reached]")
    assert bounds.record_noise(*args, detail="'later'", **kw) is None


def test_each_kind_of_junk_has_its_own_bound_whatever_its_text(db, settings):
    """The kind is a tag at the start of the detail, not a word anywhere in it: a username that
    reads "bad state" fills no bound but its own."""
    from portal.audit import bounds

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1
    args = ("auth.sign_in_failed", "denied")
    kw = {"actor": None, "source_ip": "10.2.2.2"}
    for n in range(3):
        bounds.record_noise(*args, kind="unknown username", detail=f"for 'bad state {n}'", **kw)
    assert bounds.record_noise(*args, kind="bad state", detail="bad state: no state", **kw) is not None
    assert AuditEvent.objects.filter(detail__startswith="[bad state] ").count() == 1


def test_junk_without_a_usable_address_shares_one_bound(db, settings):
    from portal.audit import bounds

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1
    kw = {"kind": "bad state", "actor": None, "source_ip": "unknown", "detail": "bad state: no state"}
    recorded = [bounds.record_noise("auth.sign_in_failed", "denied", **kw) for _ in range(4)]
    assert [e is not None for e in recorded] == [True, True, False, False]


def test_lockouts_of_made_up_usernames_are_bounded_too(client, db, settings):
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1
    for name in ("ghost1", "ghost2"):
        for _ in range(settings.PORTAL_SIGN_IN_FAILURE_LIMIT):
            client.post("/accounts/login/", {"username": name, "password": "guess"})
    events = AuditEvent.objects.filter(action="auth.sign_in_failed")
    assert events.count() == 2 and all(e.detail.startswith("[unknown username] ") for e in events)


# --- Per-request reads: session (portal/sessions.py), user and permissions (keys.sso.LeanModelBackend)
def _fresh(user):
    return User.objects.get(pk=user.pk)  # a new object: no per-request permission cache


def test_permissions_are_read_in_one_statement_and_match_djangos(requester, requester2, django_assert_num_queries):
    audit_viewers = Group.objects.create(name="auditors")
    audit_viewers.permissions.add(Permission.objects.get(codename="view_audit_log"))
    requester.groups.add(audit_viewers)
    requester.user_permissions.add(Permission.objects.get(codename="portal_admin"))
    requester2.user_permissions.add(Permission.objects.get(codename="view_issuedkey"))

    user = _fresh(requester)
    with django_assert_num_queries(1):
        perms = user.get_all_permissions()
        assert user.has_perm("keys.portal_admin") and user.has_perm("audit.view_audit_log")
    assert perms == {"keys.portal_admin", "audit.view_audit_log"}
    assert perms == ModelBackend().get_all_permissions(_fresh(requester))
    assert _fresh(requester2).get_all_permissions() == {"keys.view_issuedkey"}  # nobody else's


def test_inactive_users_have_no_permissions_and_superusers_all(requester, superuser):
    requester.user_permissions.add(Permission.objects.get(codename="portal_admin"))
    requester.is_active = False
    requester.save()
    assert not _fresh(requester).has_perm("keys.portal_admin")
    assert _fresh(superuser).get_all_permissions() == ModelBackend().get_all_permissions(_fresh(superuser))


def test_a_signed_in_request_reads_its_session_and_user_in_one_statement_each(rclient, requester):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rclient.get("/")
    with CaptureQueriesContext(connection) as queries:
        assert rclient.get("/").status_code == 200
    sql = [q["sql"] for q in queries.captured_queries]
    assert sum("django_session" in q for q in sql) == 1 and sum('FROM "auth_user"' in q for q in sql) == 1
    assert "session_data FROM" in sql[0]  # the plain read, not the ORM's


def test_an_expired_or_unknown_session_is_signed_out(rclient, requester):
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    assert rclient.get("/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert rclient.get("/").status_code == 302
    rclient.force_login(requester)
    rclient.cookies["sessionid"] = "no-such-session-key-000000000000"
    assert rclient.get("/").status_code == 302


@pytest.mark.parametrize("backend", ["portal.accounts.sso.PasswordBackend", "portal.accounts.sso.OIDCBackend"])
def test_the_backends_load_active_users_only(requester, inactive_user, backend):
    from django.utils.module_loading import import_string

    loaded = import_string(backend)().get_user(requester.pk)
    assert loaded == requester and loaded.last_login == _fresh(requester).last_login
    assert loaded.date_joined.tzinfo is not None  # the database's converters ran
    assert import_string(backend)().get_user(inactive_user.pk) is None
    assert import_string(backend)().get_user(10**9) is None
    assert import_string(backend)().get_user("not-a-number") is None
