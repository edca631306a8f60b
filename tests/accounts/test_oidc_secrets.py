"""The client secret stays secret: responses, logs, error reports (threat 1 for single sign-on)."""

from __future__ import annotations

import sys

import pytest
from django.core import mail
from django.core.signals import got_request_exception
from django.test import Client
from django.views.debug import ExceptionReporter

from portal.accounts.backends import OIDCBackend
from portal.accounts.oidc import DERIVED
from tests.accounts.helpers import ALICE, PORTAL, sso_sign_in, start
from tests.accounts.oidc_idp import CLIENT_SECRET, path_of, provider_login


def test_client_secret_never_appears_in_responses_or_logs(client, oidc, debug_logs, settings):
    responses = [client.get("/accounts/login/"), sso_sign_in(client), client.get("/"), client.get("/keys/new/")]
    back = provider_login(start(Client()), "alice", ALICE["password"], PORTAL)
    responses.append(client.get(path_of(back).replace("code=", "code=x")))  # a failed token exchange
    for response in responses:
        assert CLIENT_SECRET not in response.content.decode()
        assert CLIENT_SECRET not in str(response.headers)
    assert CLIENT_SECRET not in debug_logs.text
    assert "urllib3" in {record.name.split(".")[0] for record in debug_logs.records}  # the calls were logged
    assert CLIENT_SECRET not in oidc.log()


@pytest.mark.parametrize("basic_auth", [True, False], ids=["client_secret_basic", "client_secret_post"])
def test_client_secret_is_hidden_from_error_reports(oidc, debug_logs, monkeypatch, settings, basic_auth):
    """An unexpected error after the token exchange: the report (e-mail, and the full HTML report
    with every frame's local variables, as DEBUG or an error tracker would show) hides the secret
    that the library's token request held in its locals."""
    settings.DEBUG = False
    monkeypatch.setitem(DERIVED, "OIDC_TOKEN_USE_BASIC_AUTH", lambda: basic_auth)
    reports = []

    def report(sender, request, **kwargs):
        reports.append(ExceptionReporter(request, *sys.exc_info(), is_email=True).get_traceback_html())

    def broken(self, access_token, id_token, payload):
        raise RuntimeError("userinfo exploded")

    monkeypatch.setattr(OIDCBackend, "get_userinfo", broken)
    got_request_exception.connect(report)
    try:
        client = Client(raise_request_exception=False)
        back = provider_login(start(client), "alice", ALICE["password"], PORTAL)
        response = client.get(path_of(back))
    finally:
        got_request_exception.disconnect(report)
    assert response.status_code == 500
    assert mail.outbox and "userinfo exploded" in mail.outbox[0].body  # the report was sent
    assert reports and "token_payload" in reports[0]  # the frames and the names of their locals
    for text in [*reports, *(message.body for message in mail.outbox)]:
        assert CLIENT_SECRET not in text
    assert CLIENT_SECRET not in debug_logs.text and CLIENT_SECRET not in response.content.decode()
