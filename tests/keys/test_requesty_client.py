"""keys/requesty/ against the stand-in over real HTTP: each failure maps to the right class."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from keys import requesty
from standin import Fault

PERMS = {"manage": "none", "completions": "write"}


def test_create_returns_id_and_masked_secret(standin, canary):
    created = requesty.create_key("k", Decimal("12.50"), PERMS)
    assert created.api_key_id in standin.keys
    assert created.api_key.reveal() == canary
    assert canary not in repr(created) and canary not in str(created.api_key)
    (call,) = standin.calls_to("POST", "/v1/manage/apikey")
    assert call.body == {"name": "k", "monthly_limit": Decimal("12.5"), "permissions": PERMS}


def test_permissions_must_be_explicit_and_valid(standin):
    with pytest.raises(ValueError):
        requesty.create_key("k", Decimal(1), {"completions": "write"})
    with pytest.raises(ValueError):
        requesty.create_key("k", Decimal(1), {"manage": "admin", "completions": "write"})
    assert standin.calls == []


@pytest.mark.parametrize(
    "fault,error",
    [
        (Fault.status(400), requesty.BadRequest),
        (Fault.status(401), requesty.AuthFailed),
        (Fault.status(403), requesty.AuthFailed),
        (Fault.status(404), requesty.NotFound),
        (Fault.status(409), requesty.Rejected),
        (Fault.status(429, headers={"Retry-After": "7"}), requesty.RateLimited),
        (Fault.status(500), requesty.Unavailable),
        (Fault.status(502, body="<html>bad gateway</html>", content_type="text/html"), requesty.Unavailable),
        (Fault.reset(), requesty.Unavailable),
        (Fault.after_action_reset(), requesty.Unavailable),
        (Fault.after_action_body("not json"), requesty.MalformedResponse),
        (Fault.after_action_body('{"api_key_id": "x", "api_key": "y"}'), requesty.MalformedResponse),
    ],
)
def test_failure_classes(standin, fault, error):
    standin.inject(fault, method="POST")
    with pytest.raises(error) as info:
        requesty.create_key("k", Decimal(1), PERMS)
    assert "ADMIN-TOKEN-CANARY" not in str(info.value)
    if error is requesty.RateLimited:
        assert info.value.retry_after == 7
    if error is requesty.Unavailable and info.value.status:
        assert "bad gateway" not in str(info.value)


def test_connection_refused_is_not_sent(settings):
    settings.REQUESTY_BASE_URL = "http://127.0.0.1:9"
    with pytest.raises(requesty.NotSent):
        requesty.create_key("k", Decimal(1), PERMS)


def test_dns_failure_is_not_sent(settings):
    settings.REQUESTY_BASE_URL = "http://name.invalid"
    with pytest.raises(requesty.NotSent):
        requesty.get_key("self")


def test_read_timeout_after_create_is_unknown(standin, settings):
    settings.REQUESTY_READ_TIMEOUT = 0.3
    standin.inject(Fault.after_action_delay(1), method="POST")
    with pytest.raises(requesty.Unavailable):
        requesty.create_key("k", Decimal(1), PERMS)
    assert len(standin.keys) == 1  # it did exist upstream: hence "unknown", not "rejected"


def test_trickling_headers_are_cut_by_the_overall_deadline(standin, settings):
    """Each header byte arrives within the read timeout; only a wall-clock deadline stops it."""
    import time

    settings.REQUESTY_CONNECT_TIMEOUT, settings.REQUESTY_READ_TIMEOUT = 0.3, 0.7
    standin.inject(Fault.trickle_headers(0.2), method="GET")
    started = time.monotonic()
    with pytest.raises(requesty.Unavailable, match="too slowly"):
        requesty.get_key("self")
    assert time.monotonic() - started < 3  # the head alone would take ~20 s


def test_404_without_requestys_error_body_is_not_not_found(standin):
    standin.inject(Fault.status(404, body="<h1>Not Found</h1>", content_type="text/html"), method="GET")
    with pytest.raises(requesty.Unavailable):
        requesty.get_key("self")


def test_trickle_is_cut_by_the_overall_deadline(standin, settings):
    settings.REQUESTY_CONNECT_TIMEOUT, settings.REQUESTY_READ_TIMEOUT = 0.2, 0.5
    standin.inject(Fault.trickle(0.2), method="POST")
    with pytest.raises(requesty.Unavailable):
        requesty.create_key("k", Decimal(1), PERMS)


def test_missing_secret_keeps_the_id_for_compensation(standin):
    standin.inject(Fault.after_action_body(lambda real: json.dumps({"api_key_id": real["api_key_id"]})), method="POST")
    with pytest.raises(requesty.MalformedResponse) as info:
        requesty.create_key("k", Decimal(1), PERMS)
    assert info.value.api_key_id in standin.keys


def test_get_list_and_delete(standin):
    seeded = standin.add_key("seeded", monthly_limit=Decimal("5"), monthly_spend=Decimal("1.25"))
    info = requesty.get_key(seeded["id"])
    assert (info.name, info.monthly_limit, info.monthly_spend) == ("seeded", Decimal(5), Decimal("1.25"))
    own = requesty.get_key("self").id
    assert [k.id for k in requesty.list_keys()] == [own, seeded["id"]]
    requesty.delete_key(seeded["id"])
    with pytest.raises(requesty.NotFound):
        requesty.delete_key(seeded["id"])


def test_set_expiry_sends_rfc3339_utc_or_null(standin):
    seeded = standin.add_key("seeded")
    berlin = timezone(timedelta(hours=1))
    requesty.set_expiry(seeded["id"], datetime(2030, 3, 1, 13, 30, 15, 999, tzinfo=berlin))
    assert standin.keys[seeded["id"]]["expires_at"] == "2030-03-01T12:30:15Z"
    requesty.set_expiry(seeded["id"], None)
    assert standin.keys[seeded["id"]]["expires_at"] is None
    assert [c.body for c in standin.calls_to("POST", "/v1/manage/apikey/")] == [
        {"expires_at": "2030-03-01T12:30:15Z"},
        {"expires_at": None},
    ]
    with pytest.raises(requesty.NotFound):
        requesty.set_expiry("00000000-0000-4000-8000-00000000dead", None)


def test_key_ids_cannot_rewrite_the_path(standin):
    with pytest.raises(ValueError):
        requesty.delete_key("../org")
    assert standin.calls == []


@pytest.mark.parametrize(
    "value,expected",
    [
        (5, Decimal(5)),
        ("5.25", Decimal("5.25")),
        (Decimal("1.1"), Decimal("1.1")),
        ("NaN", None),
        (True, None),
        ([], None),
    ],
)
def test_money_is_read_from_numbers_or_strings(value, expected):
    assert requesty.parse_money(value) == expected


def test_no_redirects_are_followed(standin):
    standin.inject(Fault.status(302, headers={"Location": "http://127.0.0.1:9/steal"}), method="GET")
    with pytest.raises(requesty.Unavailable):
        requesty.get_key("self")


def test_org_usage_reads_numbers_or_strings_and_skips_what_it_cannot_read(standin):
    from datetime import UTC, datetime

    body = {
        "usage": {
            "2026-11-01T00:00:00Z": {
                "grouped_data": [
                    {"group_by_values": {"api_key_id": "a"}, "total_requests": 3, "spend": "1.25"},
                    {"group_by_values": {"api_key_id": "b"}, "total_requests": 1, "spend": 0.5},
                    {"group_by_values": {}, "spend": "9"},
                    "junk",
                ]
            },
            "2026-11-02": "junk",
        }
    }
    standin.inject(Fault.after_action_body(json.dumps(body), status=200), path="/v1/manage/org/usage")
    days = requesty.org_usage_by_key(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    assert [(d.api_key_id, d.day, d.spend, d.requests) for d in days] == [
        ("a", "2026-11-01", Decimal("1.25"), 3),
        ("b", "2026-11-01", Decimal("0.5"), 1),
    ]
    standin.inject(Fault.after_action_body("[]", status=200), path="/v1/manage/org/usage")
    with pytest.raises(requesty.MalformedResponse):
        requesty.org_usage_by_key(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))


def test_set_labels_sends_the_whole_set(standin):
    key = standin.add_key("k")
    requesty.set_labels(key["id"], {"owner": "rita"})
    assert standin.keys[key["id"]]["labels"] == {"owner": "rita"}
    (call,) = standin.calls_to("POST", f"/v1/manage/apikey/{key['id']}/label")
    assert call.body == {"labels": {"owner": "rita"}}
    assert requesty.list_keys()[1].labels == {"owner": "rita"}


# --- Name resolution within the deadline (issue 16, item 12) --------------------------------------
def _resolver_hangs_for(monkeypatch, hanging_name: str):
    """getaddrinfo hangs (up to 10 s) for one name, as a stuck DNS server makes it; others resolve."""
    import socket
    import threading

    real, release = socket.getaddrinfo, threading.Event()

    def getaddrinfo(host, *args, **kwargs):
        if host == hanging_name:
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "resolver gave up")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return release


def test_a_hanging_resolver_is_cut_off_by_the_connect_timeout(standin, settings, monkeypatch):
    import time

    settings.REQUESTY_CONNECT_TIMEOUT = 0.5
    port = standin.base_url.rsplit(":", 1)[1]
    settings.REQUESTY_BASE_URL = f"http://requesty-dns-hangs.invalid:{port}"
    release = _resolver_hangs_for(monkeypatch, "requesty-dns-hangs.invalid")
    started = time.monotonic()
    try:
        with pytest.raises(requesty.NotSent):  # nothing was sent: safe to say "try again"
            requesty.list_keys()
        assert time.monotonic() - started < 2
    finally:
        release.set()
    assert standin.calls == []


def test_a_name_is_resolved_and_kept_as_the_host(db, settings):
    """Connected to the address found, the request still names the host (virtual hosts, CDNs)."""
    import threading
    import uuid
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers["Host"])
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.REQUESTY_BASE_URL = f"http://localhost:{server.server_port}"
        with pytest.raises(requesty.Unavailable):  # a 404 that is not Requesty's own
            requesty.get_key(str(uuid.uuid4()))
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [f"localhost:{server.server_port}"]
