"""Invariant I1 and threats 1-2: the new secret and the admin token are kept nowhere.

Each test mints with a canary secret from the stand-in, then sweeps the database (raw SQL over
every table), sessions, cache, DEBUG logs (urllib3 included), the mail outbox, response headers
and cookies, and every page the user can reach afterwards."""

from __future__ import annotations

import json
import logging
from io import StringIO

import pytest
from django.core import mail
from django.test import Client

from keys.forms import new_nonce
from standin import Fault
from tests.leaks import sweep

URL = "/keys/new/"
TOKEN = "ADMIN-TOKEN-CANARY-6f1d2c"
HTMX = {"HTTP_HX_REQUEST": "true"}


def mint(client, user, **extra):
    data = {"name": "leak-check", "monthly_limit": "5", "manage": "none", "completions": "write"}
    return client.post(URL, {**data, "nonce": new_nonce(user)}, **HTMX, **extra)


def reachable_pages(client) -> list:
    from keys.models import IssuedKey

    pages = ["/", URL, "/keys/new/?name=x", "/keys/"]
    pages += [f"/keys/{pk}/" for pk in IssuedKey.objects.values_list("pk", flat=True)]
    pages += [f"/keys/{pk}/spend/" for pk in IssuedKey.objects.values_list("pk", flat=True)]
    return [client.get(path) for path in pages]


def assert_clean(canary, logs, responses):
    assert sweep(canary, logs=logs, responses=responses) == []
    assert sweep(TOKEN, logs=logs, responses=responses) == []
    for response in responses:
        assert TOKEN not in response.content.decode()


def test_successful_mint_leaves_no_trace(rclient, requester, canary, debug_logs):
    response = mint(rclient, requester)
    assert canary in response.content.decode()  # shown once, in this response body only
    assert debug_logs.records, "DEBUG logging must be captured for the sweep to mean anything"
    assert any(r.name.startswith("urllib3") for r in debug_logs.records)
    later = reachable_pages(rclient)
    assert all(canary not in page.content.decode() for page in later)
    assert_clean(canary, debug_logs, [response, *later])


def test_rotation_and_reminders_leave_no_trace(rclient, requester, canary, debug_logs):
    """The replacement's secret is shown once, in the rotation's answer, and nowhere else; the
    old key's end, the expiry calls and a reminder e-mail carry none."""
    from django.core.management import call_command

    from keys.models import IssuedKey

    mint(rclient, requester)
    old = IssuedKey.objects.get()
    response = rclient.post(f"/keys/{old.pk}/rotate/", {"grace": "1", "nonce": new_nonce(requester)}, **HTMX)
    assert canary in response.content.decode()
    new = IssuedKey.objects.exclude(pk=old.pk).get()
    IssuedKey.objects.filter(pk=new.pk).update(expires_at=new.created_at + (new.expires_at - new.created_at) / 30)
    call_command("housekeeping", "--only", "expiry", "--only", "reminders", stdout=StringIO())  # 3 days left
    assert mail.outbox, "a reminder must have been sent for the sweep to mean anything"
    later = reachable_pages(rclient)
    assert all(canary not in page.content.decode() for page in later)
    assert_clean(canary, debug_logs, [response, *later])


@pytest.mark.parametrize(
    "fault",
    [
        Fault.after_action_status(500),
        Fault.after_action_reset(),
        Fault.after_action_body("<html>CANARY-SECRET-9b71e0c4d2</html>", content_type="text/html"),
        Fault.after_action_body(lambda real: json.dumps({"api_key": real["api_key"]})),
        Fault.after_action_body(lambda real: json.dumps({"api_key_id": real["api_key_id"], "api_key": ""})),
        Fault.after_action_body(lambda real: json.dumps({**real, "api_key_id": "nope"})),
    ],
    ids=["500-after-create", "reset-after-create", "html-body", "no-id", "empty-secret", "bad-id"],
)
def test_upstream_faults_leave_no_trace(rclient, requester, standin, canary, debug_logs, fault):
    standin.inject(fault, method="POST", path="/v1/manage/apikey")
    response = mint(rclient, requester)
    assert canary not in response.content.decode()
    assert_clean(canary, debug_logs, [response, *reachable_pages(rclient)])


def test_record_failure_after_create_mails_admins_without_secrets(rclient, requester, canary, monkeypatch, debug_logs):
    """Threat 2: a fault after the secret is in memory (the audit/record insert fails)."""
    from django.db import DatabaseError

    import keys.minting

    def broken(issuance, api_key_id, template=""):
        raise DatabaseError("insert into audit failed")

    monkeypatch.setattr(keys.minting, "_record_issued", broken)
    response = mint(rclient, requester)
    assert response.status_code == 503
    assert mail.outbox, "an error report must have been e-mailed to ADMINS"
    assert_clean(canary, debug_logs, [response])


def test_crash_while_rendering_the_secret_is_a_clean_500(requester, canary, monkeypatch, debug_logs, settings):
    """Threats 1-2: an unexpected exception after minting, with DEBUG off and ADMINS set."""
    import portal.htmx

    real_render = portal.htmx.render

    def render_crashes(request, template, context=None, **kwargs):
        if context and context.get("minted"):
            raise RuntimeError("template blew up")
        return real_render(request, template, context, **kwargs)

    monkeypatch.setattr(portal.htmx, "render", render_crashes)  # where the mint page is rendered
    client = Client(raise_request_exception=False)
    client.force_login(requester)
    response = mint(client, requester)
    assert response.status_code == 500
    assert settings.ADMINS and mail.outbox
    report = mail.outbox[-1].message().as_string()
    assert "template blew up" in report  # the report is real and useful...
    assert canary not in report and TOKEN not in report  # ...and holds neither secret
    assert_clean(canary, debug_logs, [response])


def test_sign_out_clears_site_data(rclient):
    response = rclient.post("/accounts/logout/")
    assert response.status_code == 302
    assert '"storage"' in response["Clear-Site-Data"] and '"cache"' in response["Clear-Site-Data"]


def test_log_lines_are_single_json_objects():
    """Threat 14: a newline, ANSI escape or bidi override in a value cannot forge a log line."""
    from portal.jsonlog import JsonFormatter

    record = logging.makeLogRecord(
        {"msg": "name=%s", "args": ("evil\nFAKE level=ERROR \x1b[31m\u202egnp.exe",), "levelname": "INFO"}
    )
    record.key_name = "x\r\ny"
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    parsed = json.loads(line)
    assert parsed["message"].startswith("name=evil\nFAKE") and parsed["key_name"] == "x\r\ny"


def test_the_sweep_finds_a_planted_canary(rclient, requester, debug_logs):
    """The sweep itself must be able to fail: plant the canary where it looks."""
    from django.core.cache import cache

    from portal.audit import chain

    planted = "PLANTED-CANARY-1234"
    session = rclient.session
    session["oops"] = planted
    session.save()
    cache.set("oops", planted)
    logging.getLogger("keys").debug("oops %s", planted)
    chain.record("mint.denied", "denied", actor=requester, detail=planted)
    found = sweep(planted, logs=debug_logs)
    assert {"a session", "the cache", "the logs"} <= set(found)
    assert any(place.startswith("database table") for place in found)


def test_crash_after_the_secret_was_rendered_mails_no_secret(requester, canary, monkeypatch, debug_logs, settings):
    """Threat 2: the template has already written the secret when a later variable blows up."""
    import keys.views
    from keys.minting import Minted

    real_mint = keys.views.mint_key

    class ExplodingKey:
        def __init__(self, key):
            self._key = key

        def __getattr__(self, name):
            if name == "completions":  # rendered after the secret in the panel
                raise RuntimeError("late template failure")
            return getattr(self._key, name)

    def mint_then_explode(**kwargs):
        minted = real_mint(**kwargs)
        return Minted(key=ExplodingKey(minted.key), secret=minted.secret)

    monkeypatch.setattr(keys.views, "mint_key", mint_then_explode)
    client = Client(raise_request_exception=False)
    client.force_login(requester)
    response = mint(client, requester)
    assert response.status_code == 500
    report = mail.outbox[-1].message().as_string()
    assert "late template failure" in report
    assert canary not in report and TOKEN not in report
    assert_clean(canary, debug_logs, [response])


def test_error_mails_never_include_frame_variables():
    """The HTML error report lists every frame's local variables, template internals included,
    where the rendered secret sits: it must stay off (Django's default)."""
    import logging as stdlib_logging

    handlers = [h for name in ("django", "keys", "") for h in stdlib_logging.getLogger(name).handlers]
    mailers = [h for h in handlers if h.__class__.__name__ == "AdminEmailHandler"]
    assert mailers and not any(h.include_html for h in mailers)


def test_the_sweep_reads_the_messages_cookie(db):
    """Messages travel in a signed, possibly compressed cookie: the sweep must decode it."""
    from django.contrib import messages
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.http import HttpResponse
    from django.test import RequestFactory

    storage = CookieStorage(RequestFactory().get("/"))
    storage.add(messages.INFO, "PLANTED-IN-COOKIE " * 20)  # long enough to be compressed
    response = HttpResponse()
    storage.update(response)
    assert "PLANTED-IN-COOKIE" not in response.cookies["messages"].value
    assert sweep("PLANTED-IN-COOKIE", responses=[response]) == ["the messages cookie"]


def test_the_usage_example_sits_in_the_once_only_panel_and_never_repeats_the_key(rclient, requester, standin, canary):
    """Issue 13: how to use the key, shown with it and gone with it; the key itself appears once."""
    from tests.keys.helpers import post_mint

    html = post_mint(rclient, requester).content.decode()
    panel = html[html.index("data-secret-panel") : html.index("</section>", html.index('id="use-title"'))]
    assert "https://router.requesty.ai/v1/chat/completions" in panel and "OpenAI(api_key=os.environ" in panel
    assert html.count(canary) == 1
    assert "REQUESTY_API_KEY" not in rclient.get("/keys/new/").content.decode()
    assert "REQUESTY_API_KEY" not in rclient.get("/keys/").content.decode()
