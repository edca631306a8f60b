"""Branded error pages (issue 13): 400, 403, 404 and 500 say what happened and where to go, with the
site's navigation, with DEBUG off and in the sandbox (DEBUG on) alike; htmx gets the message alone."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.keys.helpers import HTMX

NAV = '<nav aria-label="Main">'


def crash(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("keys.views.listing.key_page", boom)


@pytest.fixture(params=["production", "sandbox"])
def mode(request, settings):
    if request.param == "sandbox":
        settings.DEBUG = settings.PORTAL_SANDBOX = True
    return request.param


def test_404_for_an_unknown_address_and_someone_elses_key(mode, rclient):
    for path in ("/no/such/page/", "/keys/999999/"):
        response = rclient.get(path)
        html = response.content.decode()
        assert response.status_code == 404, path
        assert "<h1>Page not found</h1>" in html and NAV in html and 'href="/keys/"' in html
        assert "URLconf" not in html and "Traceback" not in html


def test_403_names_the_problem_and_keeps_the_navigation(mode, rclient):
    response = rclient.get("/approvals/")
    html = response.content.decode()
    assert response.status_code == 403 and "You cannot open this page" in html and NAV in html
    assert "Signed in as <strong>rita</strong>" in html


def test_403_to_htmx_is_the_message_alone(mode, rclient):
    html = rclient.get("/approvals/", **HTMX).content.decode()
    assert "You cannot open this page" in html and 'role="alert"' in html and "<html" not in html


def test_500_is_branded_without_needing_the_request(mode, requester, monkeypatch):
    crash(monkeypatch)
    client = Client(raise_request_exception=False)
    client.force_login(requester)
    response = client.get("/keys/")
    html = response.content.decode()
    assert response.status_code == 500 and "Something went wrong" in html and NAV in html
    assert "/static/css/portal" in html and "RuntimeError" not in html


def test_400_is_branded(mode, rclient):
    response = rclient.get("/keys/?after=not-a-cursor")
    assert response.status_code == 400 and "could not read that request" in response.content.decode()


def test_the_sandbox_leaves_out_django_htmx_debug_takeover(settings, rclient):
    """django-htmx's debug script replaces the whole document with any 4xx at DEBUG (a policy
    refusal is a 403 shown in place): the sandbox must behave as production does."""
    settings.DEBUG = settings.PORTAL_SANDBOX = True
    html = rclient.get("/keys/new/").content.decode()
    assert "django-htmx.js" not in html and "htmx-2.min.js" in html


def test_outside_the_sandbox_debug_keeps_djangos_technical_404(settings, rclient):
    settings.DEBUG, settings.PORTAL_SANDBOX = True, False
    assert "URLconf" in rclient.get("/no/such/page/").content.decode()


def test_a_refused_csrf_token_gets_the_branded_page(requester):
    client = Client(enforce_csrf_checks=True)
    client.force_login(requester)
    response = client.post("/keys/new/", {"name": "x"})
    html = response.content.decode()
    assert response.status_code == 403 and "That form has expired" in html and NAV in html
