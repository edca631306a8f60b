"""What the stand-in's own tests (test_standin_*.py) share: a server of their own with the control
API on, and a client like the portal's, over real HTTP with ``requests`` (no Django involved).

Each module takes its fixtures with `standin, api = fixtures()`: the root conftest's `standin` is the
portal's shared stand-in, which these tests must not use, and tests/keys has no conftest of its own
for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from standin import StandIn

TOKEN = "test-admin-token-7f3a"
CANARY = "rqsty-sk-CANARY-0123456789"
KEYS = "/v1/manage/apikey"


def fresh_standin() -> Iterator[StandIn]:
    """A stand-in of the test's own, with the control API, stopped afterwards."""
    with StandIn(admin_token=TOKEN, control=True) as server:
        yield server


def api_session(standin: StandIn) -> Iterator[Callable[..., requests.Response]]:
    """A session like the portal's client: bearer token, connection reuse."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"

        def call(method: str, path: str, **kwargs) -> requests.Response:
            kwargs.setdefault("timeout", 5)
            return session.request(method, standin.base_url + path, **kwargs)

        yield call


def fixtures():
    """The `standin` (fresh_standin) and `api` (api_session) fixtures, for a test module's globals."""

    @pytest.fixture
    def standin():
        yield from fresh_standin()

    @pytest.fixture
    def api(standin):
        yield from api_session(standin)

    return standin, api


def create(api, name: str = "k", limit: object = 5, permissions: dict | None = None, **kwargs) -> requests.Response:
    body = {"name": name, "monthly_limit": limit}
    if permissions is not None:
        body["permissions"] = permissions
    return api("POST", KEYS, json=body, **kwargs)
