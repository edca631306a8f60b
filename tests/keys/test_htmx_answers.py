"""Every keys view that answers htmx with a partial (portal/htmx.py): the partial for an htmx swap,
the whole page otherwise (boosted navigations and history restores included), fragment-only
endpoints their fragment whoever asks, and every such answer `Vary: HX-Request`, so that caches and
the back button never hand out one for the other."""

from __future__ import annotations

import pytest

from keys.forms import new_nonce
from tests.keys.helpers import HTMX, mint

BOOSTED = {**HTMX, "HTTP_HX_BOOSTED": "true"}
HISTORY_RESTORE = {**HTMX, "HTTP_HX_HISTORY_RESTORE_REQUEST": "true"}


def ask(client, user, key, view: str, headers: dict):
    """One request to `view`, answered without upstream side effects (forms come back invalid)."""
    if view == "mint form":
        return client.get("/keys/new/", **headers)
    if view == "mint post":
        data = {"name": "", "monthly_limit": "25", "manage": "none", "completions": "write", "nonce": new_nonce(user)}
        return client.post("/keys/new/", data, **headers)
    if view == "approval request":
        return client.post("/approvals/request/", {"name": "big", "monthly_limit": "250", "reason": "?"}, **headers)
    if view == "revoke confirmation":
        return client.get(f"/keys/{key.pk}/revoke/", **headers)
    if view == "limit":
        return client.post(f"/keys/{key.pk}/limit/", {"monthly_limit": "1,000"}, **headers)
    if view == "spend":
        return client.get(f"/keys/{key.pk}/spend/", **headers)
    if view == "usage":
        return client.get(f"/keys/{key.pk}/usage/", **headers)
    raise AssertionError(view)


# The view, and a mark of the partial it swaps in.
PAGE_OR_PARTIAL = [
    ("mint form", 'id="mint"'),
    ("mint post", 'id="mint"'),
    ("approval request", 'id="mint"'),
    ("revoke confirmation", 'class="confirm"'),
    ("limit", 'id="limit"'),
]
FRAGMENT_ONLY = [("spend", 'class="spend"'), ("usage", 'id="usage"')]


def assert_varies(response) -> None:
    assert "HX-Request" in response["Vary"]


@pytest.mark.parametrize("view,mark", PAGE_OR_PARTIAL)
def test_htmx_gets_the_partial_and_everything_else_the_page(rkey, rclient, requester, standin, view, mark):
    partial = ask(rclient, requester, rkey, view, HTMX)
    html = partial.content.decode()
    assert partial.status_code == 200 and mark in html and "<html" not in html
    assert_varies(partial)
    for headers in ({}, BOOSTED, HISTORY_RESTORE):  # a plain request, or htmx replacing the whole page
        page = ask(rclient, requester, rkey, view, headers)
        html = page.content.decode()
        assert page.status_code == 200 and mark in html and "<html" in html, headers
        assert_varies(page)


@pytest.mark.parametrize("view,mark", FRAGMENT_ONLY)
def test_fragment_endpoints_answer_their_fragment_to_anyone(rkey, rclient, requester, standin, view, mark):
    for headers in (HTMX, {}):
        response = ask(rclient, requester, rkey, view, headers)
        html = response.content.decode()
        assert response.status_code == 200 and mark in html and "<html" not in html
        assert_varies(response)


def test_revoking_through_htmx_answers_the_row_and_otherwise_redirects(rclient, requester, standin):
    first, second = mint(rclient, requester, "first"), mint(rclient, requester, "second")
    row = rclient.post(f"/keys/{first.pk}/revoke/", **HTMX)
    html = row.content.decode()
    assert row.status_code == 200 and f'<tr id="key-{first.pk}">' in html and "<html" not in html
    assert_varies(row)
    plain = rclient.post(f"/keys/{second.pk}/revoke/")
    assert plain.status_code == 302 and plain["Location"] == "/keys/"
