"""No input a person can type makes a 500 (issue 16, item 4): every view of every URL pattern,
Django's admin included, gets odd values in each path segment and in each query parameter any
view reads (superscript digits, NUL bytes, dates at the edge of the calendar, huge numbers, ...).
Run on SQLite and PostgreSQL (NUL bytes were a 500 only there)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.test import Client

from keys.forms import KeyPageForm
from portal.audit.forms import AuditFilterForm
from portal.audit.models import AuditEvent
from tests import urlwalk
from tests.urlwalk import fill, patterns, segments

world = urlwalk.world  # the fixture
ROOT = Path(__file__).resolve().parent.parent
ODD = [
    "²",
    "\x00",
    "a\x00b",
    "9999-12-31",
    "0001-01-01",
    "0000-00-00",
    "9" * 30,
    "-1",
    "0",
    "1e999",
    "NaN",
    "%",
    "🙂",
    "[]",
    "../../etc/passwd",
    "x" * 3000,
]
# The query parameters each view reads (the last test keeps this list complete).
PARAMS = {
    "new": ["approval", "template", "name", "monthly_limit", "completions", "manage", "expires"],
    "list": list(KeyPageForm.base_fields),
    "approvals": ["page"],
    "spend": ["team"],
    "spend-export": ["team"],
    "audit": list(AuditFilterForm.base_fields),
    "audit-export-csv": list(AuditFilterForm.base_fields),
    "audit-export-jsonl": list(AuditFilterForm.base_fields),
    "login": ["next", "reauth", "signed-out", "break-glass"],
    "oidc_authentication_init": ["next", "reauth"],
    "oidc_authentication_callback": ["state", "code", "error", "error_description"],
}
ADMIN_PARAMS = ["q", "p", "o", "all"]
ALL_PARAMS = sorted({name for names in PARAMS.values() for name in names})


def _get(client: Client, path: str, query: dict | None = None):
    response = client.get(path + ("?" + urlencode(query) if query else ""))
    assert response.status_code < 500, (path, query, response.status_code)
    return response


def test_every_path_segment_of_every_view(world):
    client, valid, _ = world
    for route, _name in patterns():
        for segment in segments(route):
            for value in ODD:
                _get(client, fill(route, {**valid, segment: value}))


def test_every_query_parameter_of_every_view(world):
    client, valid, _ = world
    for route, name in patterns():
        path = fill(route, valid)
        if route.startswith("admin/"):  # Django's admin reads its own: search, page, order, all
            if name and name.endswith("_changelist"):
                for value in ODD:
                    _get(client, path, dict.fromkeys(ADMIN_PARAMS, value))
            continue
        for value in ODD:
            _get(client, path, dict.fromkeys(ALL_PARAMS, value))  # all at once, for every view
            for param in PARAMS.get(name, []):
                _get(client, path, {param: value})


@pytest.mark.parametrize("path", ["/", "/keys/", "/accounts/login/", "/oidc/callback/", "/audit/"])
def test_anonymous_odd_queries(world, path):
    for value in ODD:
        _get(Client(), path, dict.fromkeys(ALL_PARAMS, value))


def test_the_reported_cases_answer_clearly(world):
    client, _, key = world
    response = _get(client, "/keys/new/", {"approval": "²"})
    assert response.status_code == 200 and "That approval cannot be used" in response.content.decode()
    assert _get(client, "/keys/new/", {"template": "a\x00b"}).status_code == 400
    assert _get(client, "/audit/keys/a%00b/").status_code == 400
    audit = _get(client, "/audit/", {"until": "9999-12-31"})
    assert "Enter a date before 9999-12-31" in audit.content.decode()
    assert _get(client, "/audit/export.csv", {"until": "9999-12-31"}).status_code == 400
    loop = _get(client, "/accounts/login/", {"next": "/accounts/login/"})
    assert loop.status_code == 302 and loop["Location"] == "/"
    assert _get(client, "/accounts/login/", {"next": "/keys/"})["Location"] == "/keys/"  # other pages still work
    refused = Client().post("/accounts/login/", {"username": "rita\x00", "password": "x"})
    assert refused.status_code == 400 and not AuditEvent.objects.filter(action="auth.sign_in_failed").exists()


def test_the_parameter_list_names_every_parameter_a_view_reads():
    """A view reading a new query parameter must add it to PARAMS, so the tests above feed it."""
    read = set()
    for path in [*ROOT.joinpath("portal").rglob("*.py"), *ROOT.joinpath("keys").rglob("*.py")]:
        text = path.read_text()
        read |= set(re.findall(r"""GET(?:\.get\(|\[)["']([\w-]+)["']""", text))
        read |= set(re.findall(r"""["']([\w-]+)["'] in request\.GET""", text))
    onboarding = ROOT.joinpath("keys/onboarding.py").read_text()
    read |= set(re.findall(r"""params(?:\.get\(|\[)["'](\w+)["']""", onboarding))
    read |= {"name", "monthly_limit", "completions", "manage"}  # onboarding.prefill: `k in params`
    assert read and read <= set(ALL_PARAMS), sorted(read - set(ALL_PARAMS))
