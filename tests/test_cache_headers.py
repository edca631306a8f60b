"""Cache headers (issue 16, item 9): every answer to a signed-in person is `private, no-store`,
and an answer that depends on htmx says `Vary: HX-Request`, whatever its branch."""

from __future__ import annotations

from tests import urlwalk
from tests.keys.helpers import HTMX
from tests.urlwalk import fill, patterns

world = urlwalk.world  # the fixture


def _private(response) -> bool:
    directives = {d.strip() for d in response.get("Cache-Control", "").split(",")}
    return {"private", "no-store"} <= directives


def test_every_signed_in_page_is_private_and_not_stored(world):
    client, valid, _ = world
    for route, _name in patterns():
        path = fill(route, valid)
        for extra in ({}, HTMX):
            response = client.get(path, **extra)
            assert _private(response), (path, extra, response.status_code, response.get("Cache-Control"))


def test_the_answers_to_signing_in_and_out_are_private(client, rclient, requester):
    assert _private(rclient.post("/accounts/logout/"))
    assert _private(client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"}))


def test_revoke_varies_on_htmx_in_every_branch(world, rclient, requester, standin):
    _, _, key = world
    rclient.force_login(requester)
    answers = [
        rclient.get(f"/keys/{key.pk}/revoke/"),
        rclient.get(f"/keys/{key.pk}/revoke/", **HTMX),
        rclient.post(f"/keys/{key.pk}/revoke/"),  # the redirect to the list
        rclient.post(f"/keys/{key.pk}/revoke/", **HTMX),  # the row
    ]
    assert [r.status_code for r in answers] == [200, 200, 302, 200]
    for response in answers:
        assert "HX-Request" in response.get("Vary", ""), response
