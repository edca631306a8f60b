"""What the keys tests share: the htmx header, the mint form's data, minting through it, keys and
attempts made directly (no form, no Requesty), a clock that stands still, and the alerts an answer
carries."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal

import pytest
import time_machine

from keys.forms import new_nonce
from keys.models import Issuance, IssuedKey

URL = "/keys/new/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def form_data(user, **overrides) -> dict:
    """The mint form filled in for `user` ("laptop", $25, completions "write"); `overrides` change or add fields."""
    data = {"name": "laptop", "monthly_limit": "25", "manage": "none", "completions": "write", "nonce": new_nonce(user)}
    return {**data, **overrides}


def post_mint(client, user, **values):
    """The mint form posted (a "k" key of $10 unless `values` say otherwise); the answer, whatever it is."""
    return client.post(URL, form_data(user, **{"name": "k", "monthly_limit": "10", **values}), **HTMX)


def mint(client, user, name="laptop", limit="25", **extra) -> IssuedKey:
    """Mint through the form; `extra`: more fields, e.g. expires="30"."""
    assert client.post(URL, form_data(user, name=name, monthly_limit=limit, **extra), **HTMX).status_code == 200
    return IssuedKey.objects.get(name=name, owner=user)


def attempt(owner, name: str, limit: str, state: str = "issued", **fields) -> Issuance:
    """A mint attempt as minting records it (manage "none", completions "write"), made directly."""
    values = {"manage": "none", "completions": "write", **fields}
    return Issuance.objects.create(
        nonce=str(uuid.uuid4()), actor=owner, name=name, monthly_limit=Decimal(limit), state=state, **values
    )


def key_of(issuance: Issuance, api_key_id: str, **fields) -> IssuedKey:
    """The key an issued attempt became: the attempt's owner, name, limit and rights unless `fields`
    say otherwise (a limit changed since, a pending limit, an expiry...)."""
    values = {
        "name": issuance.name,
        "monthly_limit": issuance.monthly_limit,
        "manage": issuance.manage,
        "completions": issuance.completions,
        **fields,
    }
    return IssuedKey.objects.create(api_key_id=api_key_id, issuance=issuance, owner=issuance.actor, **values)


def frozen_clock(moment: datetime, *, autouse: bool = False, recorded_usage: bool = False):
    """A `clock` fixture for a test module (`clock = frozen_clock(NOW)`): time stands still at
    `moment` until the test moves it (`clock.shift(timedelta(days=1))`).

    `autouse`: for every test of the module, set up before its other fixtures, so signed-in
    clients' sessions start at `moment` too. `recorded_usage`: the stand-in's usage is only what
    the test records (spend_helpers.spend), not its made-up figures."""

    @pytest.fixture(autouse=autouse)
    def clock(request):
        if recorded_usage:
            request.getfixturevalue("standin").fake_usage = False
        with time_machine.travel(moment, tick=False) as traveller:
            yield traveller

    return clock


def creates(standin) -> list:
    """The create calls (not the expiry and label calls that follow each)."""
    return [c for c in standin.calls_to("POST", "/v1/manage/apikey") if c.path == "/v1/manage/apikey"]


def alerts(response) -> list[str]:
    """The text of each alert block (`<div|p role="alert">`)."""
    html = response.content.decode()
    return [re.sub(r"<[^>]+>", "", m).strip() for m in re.findall(r'role="alert"[^>]*>(.*?)</(?:div|p)>', html, re.S)]


def alert_text(response) -> str:
    """Every alert's leading text, any element, as one string."""
    return " ".join(re.findall(r'role="alert"[^>]*>([^<]*)', response.content.decode()))
