"""What the keys tests share: the htmx header, the mint form's data, minting through it, and the
alerts an answer carries."""

from __future__ import annotations

import re

from keys.forms import new_nonce
from keys.models import IssuedKey

URL = "/keys/new/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def form_data(user, **overrides) -> dict:
    data = {"name": "laptop", "monthly_limit": "25", "manage": "none", "completions": "write", "nonce": new_nonce(user)}
    data.update(overrides)
    return data


def post_mint(client, user, **values):
    data = {"name": "k", "monthly_limit": "10", "manage": "none", "completions": "write", "nonce": new_nonce(user)}
    return client.post("/keys/new/", {**data, **values}, **HTMX)


def mint(client, user, name="laptop", limit="25", **extra) -> IssuedKey:
    """Mint through the form; `extra`: more fields, e.g. expires="30"."""
    data = {"name": name, "monthly_limit": limit, "manage": "none", "completions": "write", "nonce": new_nonce(user)}
    assert client.post("/keys/new/", {**data, **extra}, **HTMX).status_code == 200
    return IssuedKey.objects.get(name=name, owner=user)


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
