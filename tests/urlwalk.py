"""Every URL pattern of the portal, Django's admin included, filled with values: for the tests that
must reach every view (tests/test_odd_input.py, tests/test_cache_headers.py)."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from keys.models import ApprovalRequest
from portal.audit.models import AuditEvent
from tests.keys.helpers import mint

SEGMENT = re.compile(r"<(?:(\w+):)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


def patterns(url_patterns=None, prefix=""):
    """(route, name) of every pattern."""
    for p in get_resolver().url_patterns if url_patterns is None else url_patterns:
        if isinstance(p, URLResolver):
            yield from patterns(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.name


def segments(route: str) -> list[str]:
    return [m.group(2) or m.group(3) for m in SEGMENT.finditer(route)]


def fill(route: str, values: dict[str, str]) -> str:
    path = SEGMENT.sub(lambda m: quote(values[m.group(2) or m.group(3)], safe=""), route)
    return "/" + path.lstrip("^").rstrip("$")


@pytest.fixture
def world(db, requester, standin, settings):
    """A superuser's client (every admin branch), the values that fill each pattern's segments,
    and the requester's key; one approval request; SSO switched on (no provider is called)."""
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "portal", "secret"
    for name in ("AUTHORIZATION", "TOKEN", "JWKS"):
        setattr(settings, f"OIDC_{name}_ENDPOINT", f"http://127.0.0.1:9/{name.lower()}")
    boss = User.objects.create_superuser("boss", "boss@example.com", "pw-boss")
    client = Client()
    client.force_login(requester)
    key = mint(client, requester)
    approval = ApprovalRequest.objects.create(requester=requester, name="big", monthly_limit=250, reason="a reason")
    client.force_login(boss)
    valid = {
        "pk": str(approval.pk),
        "seq": str(AuditEvent.objects.values_list("seq", flat=True).first()),
        "api_key_id": key.api_key_id,
        "object_id": "1",
        "content_type_id": "1",
        "id": str(boss.pk),
        "app_label": "keys",
        "url": "nowhere/",
    }
    return client, valid, key
