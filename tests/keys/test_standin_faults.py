"""The stand-in Requesty's fault injection, latency and stopping, over real HTTP (no Django
involved). Client timeouts here are a tenth of a second: no test waits out a long one."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from standin import Fault, StandIn
from tests.polling import wait_until

from .standin_client import CANARY, KEYS, TOKEN, create, fixtures

standin, api = fixtures()


# ---- faults ---------------------------------------------------------------------------------------


def test_status_fault_does_not_act(standin, api):
    standin.inject(Fault.status(500), "POST", KEYS)
    r = create(api)
    assert r.status_code == 500 and r.json()["error"]["origin"] == "router"
    assert standin.keys == {}
    standin.inject(Fault.status(502, "<html><h1>502 Bad Gateway</h1></html>", "text/html"))
    r = create(api)
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/html"
    assert r.text.startswith("<html>")
    standin.inject(Fault.status(429, headers={"Retry-After": "30"}))
    r = create(api)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "30")
    assert standin.keys == {}
    assert create(api).status_code == 201  # faults are consumed


def test_fault_matching_times_and_order(standin, api):
    standin.inject(Fault.status(503), method="DELETE")
    standin.inject(Fault.status(504), path="/v1/manage/org", times=2)
    standin.inject(Fault.status(500), path="/v1/manage/org")
    assert create(api).status_code == 201  # no fault matches POST /apikey
    assert [api("GET", "/v1/manage/org").status_code for _ in range(4)] == [504, 504, 500, 200]
    assert api("DELETE", f"{KEYS}/x").status_code == 503
    with pytest.raises(ValueError):
        standin.inject(Fault.reset(), times=0)


def test_after_action_status_keeps_the_key(standin, api):
    standin.inject(Fault.after_action_status(504, "gateway timeout", "text/plain"))
    r = create(api, "lost")
    assert (r.status_code, r.text) == (504, "gateway timeout")
    assert [k["name"] for k in standin.keys.values()] == ["lost"]


def test_reset_raises_and_does_not_act(standin, api):
    standin.inject(Fault.reset(), "POST")
    with pytest.raises(requests.ConnectionError):
        create(api)
    assert standin.keys == {}
    assert len(standin.calls) == 1  # the request did arrive
    assert create(api).status_code == 201  # the session recovers on a new connection


def test_after_action_reset_creates_then_raises(standin, api):
    standin.inject(Fault.after_action_reset())
    with pytest.raises(requests.ConnectionError):
        create(api, "orphan")
    assert [k["name"] for k in standin.keys.values()] == ["orphan"]


def test_delay_then_acts_or_times_out(standin, api):
    standin.inject(Fault.delay(0.3))
    with pytest.raises(requests.ReadTimeout):
        create(api, timeout=(1, 0.1))
    wait_until(lambda: len(standin.keys) == 1, timeout=5)  # the action still ran after the delay
    standin.inject(Fault.delay(0.1))
    started = time.monotonic()
    assert api("GET", "/v1/manage/org").status_code == 200
    assert time.monotonic() - started >= 0.1


def test_after_action_delay_creates_before_the_client_times_out(standin, api):
    standin.inject(Fault.after_action_delay(0.3))
    with pytest.raises(requests.ReadTimeout):
        create(api, "slow", timeout=(1, 0.1))
    assert [k["name"] for k in standin.keys.values()] == ["slow"]


@pytest.mark.parametrize(
    "body",
    [
        "<html>oops</html>",
        "{}",
        '{"api_key_id": "not-a-uuid", "api_key": "x"}',
        b"\xff\xfe",
    ],
)
def test_after_action_body_malformed(standin, api, body):
    standin.inject(Fault.after_action_body(body))
    r = create(api)
    assert r.status_code == 201
    assert r.content == (body if isinstance(body, bytes) else body.encode())
    assert len(standin.keys) == 1


def test_after_action_body_callable_sees_the_real_response(standin, api):
    standin.secret_factory = lambda: CANARY
    standin.inject(Fault.after_action_body(lambda real: json.dumps({"api_key_id": real["api_key_id"]}), status=200))
    r = create(api)
    assert r.status_code == 200
    assert list(standin.keys) == [r.json()["api_key_id"]]
    assert CANARY not in r.text


def test_together_passes_calls_in_flight_at_once_and_refuses_calls_one_after_the_other(standin, api):
    standin.inject(Fault.together(2, seconds=5), "POST", KEYS, times=2)

    def post(name: str) -> int:  # a connection of its own per call
        body, headers = {"name": name, "monthly_limit": 5}, {"Authorization": f"Bearer {TOKEN}"}
        return requests.post(standin.base_url + KEYS, json=body, headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(post, ["a", "b"]))
    assert answers == [201, 201] and len(standin.keys) == 2
    standin.inject(Fault.together(2, seconds=0.1), "POST", KEYS, times=2)
    assert [create(api, "c").status_code, create(api, "d").status_code] == [504, 504]
    assert len(standin.keys) == 2  # neither acted


def test_trickle_sends_headers_at_once_and_the_body_slowly(standin, api):
    standin.secret_factory = lambda: "c"
    standin.inject(Fault.trickle(0.01))
    started = time.monotonic()
    r = create(api, stream=True)
    assert r.status_code == 201 and time.monotonic() - started < 0.3
    body = r.content  # each read is within the read timeout; only a total deadline would fire
    assert time.monotonic() - started >= 0.01 * len(body) * 0.8
    assert json.loads(body)["api_key"] == "c"


def test_trickle_stops_quietly_when_the_client_leaves(standin, api):
    standin.inject(Fault.trickle(0.05))
    r = create(api, stream=True)
    r.raw.read(2)
    r.close()
    assert api("GET", "/v1/manage/org").status_code == 200


def test_latency_and_reset(standin, api):
    standin.latency = 0.15
    started = time.monotonic()
    api("GET", "/v1/manage/org")
    assert time.monotonic() - started >= 0.15
    create(api)
    standin.inject(Fault.status(500))
    standin.reset()
    assert (standin.keys, standin.calls, standin.latency) == ({}, [], 0.0)
    assert api("GET", "/v1/manage/org").status_code == 200


def test_stop_does_not_wait_for_injected_delays():
    server = StandIn(admin_token=TOKEN).start()
    server.inject(Fault.delay(30))
    threading.Thread(
        target=lambda: _swallow(lambda: requests.get(server.base_url + "/v1/manage/org", timeout=5)), daemon=True
    ).start()
    wait_until(lambda: len(server.calls) == 1, timeout=5)  # the request is in, waiting out its delay
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2


def _swallow(fn) -> None:
    try:
        fn()
    except requests.RequestException:
        pass
