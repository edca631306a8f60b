"""The mint form when Requesty fails (threats 4-6): a definite "no" offers the form again, an
unknown outcome offers nothing to resubmit blindly, and a key nobody can receive is deleted again."""

from __future__ import annotations

import json

import pytest

from keys.models import Issuance, IssuedKey
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, URL, alerts, form_data


def _fault_post(client, user, standin, fault):
    standin.inject(fault, method="POST", path="/v1/manage/apikey")
    return client.post(URL, form_data(user), **HTMX)


@pytest.mark.parametrize(
    "fault,status,phrase",
    [
        (Fault.status(400), 502, "Requesty refused these values"),
        (Fault.status(401), 502, "misconfigured"),
        (Fault.status(403), 502, "misconfigured"),
        (Fault.status(429, headers={"Retry-After": "30"}), 429, "Try again in 30 seconds"),
    ],
)
def test_definite_rejections(rclient, requester, standin, canary, fault, status, phrase):
    response = _fault_post(rclient, requester, standin, fault)
    assert response.status_code == status
    assert any(phrase in text for text in alerts(response)), alerts(response)
    assert canary not in response.content.decode()
    issuance = Issuance.objects.get()
    assert issuance.state == "rejected" and standin.keys == {}
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "mint.requested",
        "mint.rejected",
    ]
    assert 'name="name"' in response.content.decode()  # the form is offered again with a new nonce


def test_requesty_raw_error_text_is_not_echoed(rclient, requester, standin):
    fault = Fault.status(400, body='{"error": {"origin": "router", "message": "<b>raw upstream</b>"}}')
    response = _fault_post(rclient, requester, standin, fault)
    assert "raw upstream" not in response.content.decode()


def test_auth_failure_is_logged_at_error_and_mails_admins(rclient, requester, standin, debug_logs):
    from django.core import mail

    _fault_post(rclient, requester, standin, Fault.status(403))
    assert any(r.levelname == "ERROR" and r.name == "keys.minting" for r in debug_logs.records)
    assert mail.outbox and "ADMIN-TOKEN-CANARY" not in mail.outbox[0].message().as_string()


def test_connection_refused_is_rejected(rclient, requester, standin, settings):
    settings.REQUESTY_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    response = rclient.post(URL, form_data(requester), **HTMX)
    assert response.status_code == 503
    assert any("could not be reached" in t for t in alerts(response))
    assert Issuance.objects.get().state == "rejected"


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(500),
        Fault.status(502, body="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html"),
        Fault.status(504),
        Fault.reset(),
        Fault.after_action_status(500),
        Fault.after_action_reset(),
        Fault.after_action_delay(4),
        Fault.after_action_body("<html>oops</html>", content_type="text/html"),
        Fault.after_action_body("{}"),
        Fault.after_action_body('{"api_key_id": "not-a-uuid", "api_key": "CANARY-SECRET-9b71e0c4d2"}'),
    ],
    ids=[
        "500",
        "502-html",
        "504",
        "reset",
        "created-500",
        "created-reset",
        "created-timeout",
        "html",
        "empty",
        "bad-id",
    ],
)
def test_unknown_outcomes_are_reported_honestly(rclient, requester, standin, canary, settings, fault):
    settings.REQUESTY_READ_TIMEOUT = 0.5  # a created key's late answer is given up on in 0.5 s, not 3
    response = _fault_post(rclient, requester, standin, fault)
    html = response.content.decode()
    assert response.status_code == 202
    assert any("could not confirm whether Requesty created the key" in t for t in alerts(response))
    assert canary not in html and 'name="name"' not in html  # nothing to resubmit blindly
    assert "Start a new request" not in html and 'href="/keys/">Go to My keys' in html  # no contradiction
    assert "checks with Requesty every 15 minutes" in html
    issuance = Issuance.objects.get()
    assert issuance.state == "unknown"
    assert issuance.reference in html
    assert IssuedKey.objects.count() == 0
    assert AuditEvent.objects.filter(action="mint.unknown", outcome="unknown").count() == 1


def test_malformed_2xx_with_an_id_is_compensated_at_once(rclient, requester, standin, canary):
    fault = Fault.after_action_body(lambda real: json.dumps({"api_key_id": real["api_key_id"]}))
    response = _fault_post(rclient, requester, standin, fault)
    assert response.status_code == 202 and canary not in response.content.decode()
    assert standin.keys == {}  # deleted upstream
    issuance = Issuance.objects.get()
    assert issuance.state == "compensated" and issuance.api_key_id
    assert AuditEvent.objects.filter(action="key.compensated").count() == 1


def test_slow_trickle_is_cut_by_the_clients_deadline(rclient, requester, standin, settings):
    settings.REQUESTY_CONNECT_TIMEOUT, settings.REQUESTY_READ_TIMEOUT = 0.5, 1
    response = _fault_post(rclient, requester, standin, Fault.trickle(0.3))
    assert response.status_code == 202
    assert Issuance.objects.get().state == "unknown"
