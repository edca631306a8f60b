"""Error reports and noise (issue 16, item 5): a request for a foreign Host is logged, never
e-mailed; a 500's report to ADMINS hides the CSRF secret, the CSRF form token and the session
cookie like any other secret."""

from __future__ import annotations

import logging

from django.core import mail
from django.test import Client

CSRF_SECRET = "C" * 32  # a well-formed CSRF cookie: CsrfViewMiddleware copies it to META["CSRF_COOKIE"]
FORM_TOKEN = "F" * 64


def test_a_bad_host_header_is_logged_without_mail(db, settings):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("django.security.DisallowedHost")
    logger.addHandler(handler)
    try:
        for _ in range(5):
            assert Client(HTTP_HOST="evil.example").get("/").status_code == 400
    finally:
        logger.removeHandler(handler)
    assert settings.ADMINS and mail.outbox == []
    assert len(records) == 5 and "evil.example" in records[0].getMessage()


def test_error_reports_hide_csrf_secrets_and_the_session(requester, monkeypatch, settings):
    import portal.htmx

    def crash(*args, **kwargs):
        raise RuntimeError("rendering blew up")

    monkeypatch.setattr(portal.htmx, "render", crash)
    client = Client(raise_request_exception=False)
    client.force_login(requester)
    client.cookies["csrftoken"] = CSRF_SECRET
    session = client.cookies["sessionid"].value
    response = client.post("/approvals/request/", {"name": "x", "csrfmiddlewaretoken": FORM_TOKEN})
    assert response.status_code == 500
    assert settings.ADMINS and mail.outbox
    report = mail.outbox[-1].message().as_string()
    assert "rendering blew up" in report and "CSRF_COOKIE" in report  # a real report, with the key...
    for secret in (CSRF_SECRET, FORM_TOKEN, session):
        assert secret not in report  # ...but none of the values
