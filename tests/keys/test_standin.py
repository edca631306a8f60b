"""Tests of the stand-in Requesty itself, over real HTTP with ``requests`` (no Django involved)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from standin import Fault, StandIn
from standin.server import ADMIN_ID

TOKEN = "test-admin-token-7f3a"
CANARY = "rqsty-sk-CANARY-0123456789"
KEYS = "/v1/manage/apikey"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def standin():
    server = StandIn(admin_token=TOKEN, control=True).start()
    yield server
    server.stop()


@pytest.fixture
def api(standin):
    """A session like the portal's client: bearer token, connection reuse."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return session.request(method, standin.base_url + path, **kwargs)

    yield call
    session.close()


def create(api, name: str = "k", limit: object = 5, permissions: dict | None = None, **kwargs) -> requests.Response:
    body = {"name": name, "monthly_limit": limit}
    if permissions is not None:
        body["permissions"] = permissions
    return api("POST", KEYS, json=body, **kwargs)


# ---- the API ------------------------------------------------------------------------------------


def test_round_trip(standin, api):
    standin.secret_factory = lambda: CANARY
    r = create(api, "alice laptop", 12.5, permissions={"manage": "none", "completions": "read"})
    assert r.status_code == 201
    key_id = r.json()["api_key_id"]
    assert r.json()["api_key"] == CANARY
    assert standin.keys[key_id]["monthly_limit"] == Decimal("12.5")
    assert standin.keys[key_id]["permissions"] == {"manage": "none", "completions": "read"}

    listed = api("GET", KEYS).json()["keys"]
    assert [k["id"] for k in listed] == [ADMIN_ID, key_id]  # the admin token's own key is listed too
    assert CANARY not in json.dumps(listed)
    assert set(listed[1]) == {"id", "name", "monthly_limit", "monthly_spend", "permissions", "labels", "created_by"}

    detail = api("GET", f"{KEYS}/{key_id}").json()
    assert detail == {
        "id": key_id,
        "name": "alice laptop",
        "logging": False,
        "monthly_spend": 0,
        "monthly_limit": 12.5,
        "permissions": {"manage": "none", "completions": "read"},
    }

    r = api("POST", f"{KEYS}/{key_id}/limit", json={"monthly_limit": 0.1})
    assert (r.status_code, r.content) == (204, b"")
    assert standin.keys[key_id]["monthly_limit"] == Decimal("0.1")
    assert api("GET", f"{KEYS}/{key_id}").json(parse_float=Decimal)["monthly_limit"] == Decimal("0.1")
    assert api("POST", f"{KEYS}/{key_id}/label", json={"labels": {"team": "ml"}}).status_code == 204
    assert standin.keys[key_id]["labels"] == {"team": "ml"}
    r = api("POST", f"{KEYS}/{key_id}/expiry", json={"expires_at": "2099-01-01T00:00:00Z"})
    assert r.status_code == 204
    assert standin.keys[key_id]["expires_at"] == "2099-01-01T00:00:00Z"

    assert api("DELETE", f"{KEYS}/{key_id}").status_code == 204
    assert standin.keys == {}
    assert api("DELETE", f"{KEYS}/{key_id}").status_code == 404
    assert api("GET", f"{KEYS}/{key_id}").status_code == 404


def test_default_permissions_seeded_keys_self_and_org(standin, api):
    key_id = create(api).json()["api_key_id"]
    assert standin.keys[key_id]["permissions"] == {"manage": "none", "completions": "write"}
    seeded = standin.add_key("seeded", Decimal("3"), monthly_spend=Decimal("1.25"))
    assert api("GET", f"{KEYS}/{seeded['id']}").json()["monthly_spend"] == 1.25
    me = api("GET", f"{KEYS}/self").json()
    assert me["permissions"] == {"manage": "write", "completions": "none"}
    assert api("GET", "/v1/manage/org").json() == {"name": "Stand-in Org", "balance": 1000}


@pytest.mark.parametrize(
    "body",
    [
        {"monthly_limit": 5},
        {"name": "", "monthly_limit": 5},
        {"name": 3, "monthly_limit": 5},
        {"name": "k"},
        {"name": "k", "monthly_limit": "5"},
        {"name": "k", "monthly_limit": True},
        {"name": "k", "monthly_limit": -1},
        {"name": "k", "monthly_limit": 5, "permissions": {"manage": "write"}},
        {"name": "k", "monthly_limit": 5, "permissions": {"manage": "WRITE", "completions": "none"}},
        {"name": "k", "monthly_limit": 5, "permissions": {"manage": ["write"], "completions": "none"}},
        {"name": "k", "monthly_limit": 5, "permissions": "write"},
    ],
)
def test_create_rejects_bad_bodies(standin, api, body):
    r = api("POST", KEYS, json=body)
    assert r.status_code == 400
    assert r.json()["error"]["origin"] == "router"
    assert standin.keys == {}


def test_invalid_json_and_unknown_paths(standin, api):
    key_id = create(api).json()["api_key_id"]
    bad = {"data": b"{not json", "headers": {"Content-Type": "application/json"}}
    assert api("POST", KEYS, **bad).status_code == 400
    assert api("POST", f"{KEYS}/{key_id}/limit", **bad).status_code == 400
    assert api("POST", f"{KEYS}/{key_id}/limit", json={"monthly_limit": "9"}).status_code == 400
    assert api("POST", f"{KEYS}/{key_id}/label", json={"labels": {"a": 1}}).status_code == 400
    assert api("POST", f"{KEYS}/{key_id}/expiry", json={"expires_at": "soon"}).status_code == 400
    assert api("GET", "/v1/nope").status_code == 404
    assert api("GET", "/elsewhere").status_code == 404
    assert api("PUT", KEYS).status_code == 405


def test_usage_is_deterministic_and_validated(standin, api):
    key_id = create(api).json()["api_key_id"]
    query = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-04T00:00:00Z", "resolution": "day"}
    first = api("GET", f"{KEYS}/{key_id}/usage", params=query).json()["usage"]
    assert list(first) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert set(first["2024-01-01"]) >= {"total_requests", "spend", "input_tokens", "output_tokens"}
    assert api("GET", f"{KEYS}/{key_id}/usage", params=query).json()["usage"] == first
    assert len(api("GET", f"{KEYS}/{key_id}/usage", params={"start": "2024-01-01T00:00:00Z"}).json()["usage"]) == 1
    assert api("GET", f"{KEYS}/{key_id}/usage").status_code == 400
    too_long = {"start": "2024-01-01T00:00:00Z", "end": "2024-06-01T00:00:00Z"}
    assert api("GET", f"{KEYS}/{key_id}/usage", params=too_long).status_code == 400
    assert api("GET", f"{KEYS}/unknown/usage", params=query).status_code == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": "Bearer wrong-token"}, 403),
    ],
)
def test_auth(standin, headers, status):
    for method, path in (("GET", KEYS), ("POST", KEYS), ("GET", "/v1/manage/org")):
        r = requests.request(
            method, standin.base_url + path, headers=headers, json={"name": "k", "monthly_limit": 1}, timeout=5
        )
        assert r.status_code == status
        assert set(r.json()["error"]) == {"origin", "message"}
    assert standin.keys == {}


def test_calls_record_bodies_but_never_the_token(standin, api):
    create(api, "x", 2)
    requests.get(standin.base_url + KEYS, headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert [(c.method, c.path) for c in standin.calls] == [("POST", KEYS), ("GET", KEYS)]
    assert standin.calls[0].body == {"name": "x", "monthly_limit": 2}
    assert len(standin.calls_to("post", "/v1/manage")) == 1
    assert TOKEN not in repr(standin.calls) and "wrong" not in repr(standin.calls)
    assert TOKEN not in requests.get(standin.base_url + "/_standin/state", timeout=5).text


def test_keep_alive_serves_several_requests_on_one_connection(standin, api):
    conn = http.client.HTTPConnection(standin.host, standin.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/v1/manage/org", headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["name"]
        conn.request("DELETE", f"{KEYS}/missing", headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        assert response.status == 404 and response.read()
    conn.close()


def test_concurrent_creates(standin, api):
    def worker(i: int) -> None:
        assert create(api, f"k{i}").status_code == 201

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(k["name"] for k in standin.keys.values()) == sorted(f"k{i}" for i in range(20))


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
    assert _eventually(lambda: len(standin.keys) == 1)  # the action still ran after the delay
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
    assert _eventually(lambda: len(server.calls) == 1)  # the request is in, waiting out its delay
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2


def _eventually(condition, timeout: float = 5.0) -> bool:
    """Poll until `condition()` holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _swallow(fn) -> None:
    try:
        fn()
    except requests.RequestException:
        pass


# ---- control API and CLI ---------------------------------------------------------------------------


def test_control_api(standin, api):
    base = standin.base_url + "/_standin"
    create(api, "one")
    state = requests.get(base + "/state", timeout=5).json()
    assert state["calls"] == 1 and [k["name"] for k in state["keys"]] == ["one"]
    assert all("api_key" not in k for k in state["keys"])

    r = requests.post(
        base + "/faults",
        json={"kind": "status", "args": {"code": 502}, "method": "POST", "path": KEYS, "times": 2},
        timeout=5,
    )
    assert r.status_code == 204
    assert [create(api).status_code for _ in range(3)] == [502, 502, 201]
    assert requests.post(base + "/faults", json={"kind": "after_action_delay", "args": {"seconds": 0.3}}, timeout=5).ok
    with pytest.raises(requests.ReadTimeout):
        create(api, timeout=(1, 0.1))
    assert requests.post(base + "/faults", json={"kind": "explode"}, timeout=5).status_code == 400
    assert requests.post(base + "/faults", json={"kind": "status", "args": {"nope": 1}}, timeout=5).status_code == 400

    assert requests.post(base + "/latency", json={"seconds": 0.2}, timeout=5).status_code == 204
    assert standin.latency == 0.2
    assert requests.post(base + "/reset", timeout=5).status_code == 204
    assert requests.get(base + "/state", timeout=5).json()["keys"] == []
    assert standin.latency == 0.0


def test_control_api_is_off_by_default():
    with StandIn(admin_token=TOKEN) as server:
        assert requests.get(server.base_url + "/_standin/state", timeout=5).status_code == 404
        assert requests.post(server.base_url + "/_standin/reset", timeout=5).status_code == 404
    with pytest.raises(ValueError):
        StandIn(host="0.0.0.0", admin_token=TOKEN, control=True)  # noqa: S104


def test_cli_serves_until_terminated():
    proc = subprocess.Popen(
        [sys.executable, "-m", "standin", "--port", "0", "--admin-token", TOKEN, "--control"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("stand-in Requesty listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        r = requests.get(base_url + "/v1/manage/org", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert r.json()["name"] == "Stand-in Org"
        assert requests.get(base_url + "/_standin/state", timeout=5).status_code == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert TOKEN not in stderr


def test_cli_refuses_remote_hosts():
    result = subprocess.run(
        [sys.executable, "-m", "standin", "--host", "0.0.0.0", "--port", "0", "--admin-token", TOKEN],  # noqa: S104
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2 and "--allow-remote" in result.stderr
