"""The stand-in Requesty's API, control API and command line, over real HTTP (no Django involved)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import time_machine

from standin import StandIn
from standin.api import ADMIN_ID

from .standin_client import CANARY, KEYS, TOKEN, create, fixtures

ROOT = Path(__file__).resolve().parents[2]


standin, api = fixtures()


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


def test_an_expired_key_refuses_every_update_and_cannot_be_revived(standin, api):
    key_id = create(api).json()["api_key_id"]
    with time_machine.travel(datetime(2030, 1, 1, 12, tzinfo=UTC), tick=False) as clock:
        for value in ("2030-01-02T12:00:00Z", None, "2030-01-02T12:00:00+00:00"):  # None: never
            assert api("POST", f"{KEYS}/{key_id}/expiry", json={"expires_at": value}).status_code == 204
        assert api("POST", f"{KEYS}/{key_id}/limit", json={"monthly_limit": 5}).status_code == 204
        clock.shift(timedelta(days=1))  # exactly the expiry: expired
        for path, body in [
            ("limit", {"monthly_limit": 7}),
            ("label", {"labels": {"team": "ml"}}),
            ("expiry", {"expires_at": "2031-01-01T00:00:00Z"}),
            ("expiry", {"expires_at": None}),
        ]:
            r = api("POST", f"{KEYS}/{key_id}/{path}", json=body)
            assert r.status_code == 400, path
            assert "expired" in r.json()["error"]["message"]
        key = standin.keys[key_id]
        assert (key["monthly_limit"], key["labels"], key["expires_at"]) == (Decimal(5), {}, "2030-01-02T12:00:00+00:00")
        assert api("DELETE", f"{KEYS}/{key_id}").status_code == 204  # it can still be deleted


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


def test_org_usage_grouped_by_key_as_requesty_shows_it(standin, api):
    """requesty-api.md: each period's `grouped_data` names the key in `group_by_values`, money as strings."""
    standin.fake_usage = False
    first, second = (create(api).json()["api_key_id"] for _ in range(2))
    standin.record_usage(first, "2024-01-02", Decimal("1.25"), 7)
    standin.record_usage(second, "2024-01-02", Decimal("0.5"), 1)
    query = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-03T00:00:00Z", "resolution": "day"}
    usage = api("GET", "/v1/manage/org/usage", params={**query, "group_by": "api_key_id"}).json()["usage"]
    assert usage["2024-01-01"] == {"total_requests": 0, "spend": "0", "grouped_data": []}
    day = usage["2024-01-02"]
    assert day["total_requests"] == 8 and day["spend"] == "1.75"
    assert {"group_by_values": {"api_key_id": first}, "total_requests": 7, "spend": "1.25"} in day["grouped_data"]
    assert "grouped_data" not in api("GET", "/v1/manage/org/usage", params=query).json()["usage"]["2024-01-02"]
    assert api("GET", "/v1/manage/org/usage").status_code == 400
    # The key's own usage agrees.
    own = api("GET", f"{KEYS}/{first}/usage", params=query).json()["usage"]
    assert own["2024-01-02"]["total_requests"] == 7 and own["2024-01-01"]["total_requests"] == 0


def test_labels_replace_the_whole_set_and_show_in_the_list(standin, api):
    key_id = create(api).json()["api_key_id"]
    assert api("POST", f"{KEYS}/{key_id}/label", json={"labels": {"a": "1", "b": "2"}}).status_code == 204
    assert api("POST", f"{KEYS}/{key_id}/label", json={"labels": {"b": "3"}}).status_code == 204
    listed = {k["id"]: k for k in api("GET", KEYS).json()["keys"]}
    assert listed[key_id]["labels"] == {"b": "3"}


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
