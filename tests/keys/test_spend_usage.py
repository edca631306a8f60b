"""One Requesty call per PORTAL_SPEND_CACHE_SECONDS for everyone's spend (keys/usage.py), the 30-day
chart cached per key and bounded per person, and "last used" wherever a key is shown; counted on
the stand-in, over HTTP, with time moved by time-machine."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.test import Client
from django.utils import timezone

from keys import usage
from tests.keys.helpers import HTMX
from tests.keys.spend_helpers import ORG_USAGE, issued, org_calls, spend
from tests.threads import run_together


def test_the_default_cache_is_shared_through_the_database():
    """Per-process caches would let every worker call Requesty on its own."""
    assert isinstance(caches["default"], DatabaseCache)


def test_one_call_per_period_however_many_keys_and_viewers(standin, requester, rclient, aclient, settings):
    settings.PORTAL_SPEND_CACHE_SECONDS = 60
    standin.fake_usage = False
    keys = [issued(standin, requester, f"k{i:02d}", "10") for i in range(60)]
    spend(standin, keys[-1], "2.50")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        mine = rclient.get("/keys/").content.decode()
        everyone = aclient.get("/keys/?owner=rita").content.decode()
        for key in keys[:5]:
            assert rclient.get(f"/keys/{key.pk}/").status_code == 200
            assert rclient.get(f"/keys/{key.pk}/spend/", **HTMX).status_code == 200
        assert aclient.get("/spend/").status_code == 200
        assert org_calls(standin) == 1
        assert standin.calls_to("GET", "/v1/manage/apikey/") == []  # never a call per key
        assert "$2.50 of $10.00 (25%)" in mine and "$2.50 of $10.00 (25%)" in everyone
        clock.shift(timedelta(seconds=59))
        rclient.get("/keys/")
        assert org_calls(standin) == 1
        spend(standin, keys[-1], "5.00")
        clock.shift(timedelta(seconds=2))
        assert "$7.50 of $10.00 (75%)" in rclient.get("/keys/").content.decode()
        assert org_calls(standin) == 2


def test_a_failed_organization_call_is_not_retried_within_the_period(standin, requester, rclient):
    from standin import Fault

    issued(standin, requester, "k", "10")
    standin.inject(Fault.status(503), method="GET", path=ORG_USAGE)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(5):
            assert "could not be loaded" in rclient.get("/keys/").content.decode()
        assert org_calls(standin) == 1
        clock.shift(timedelta(seconds=61))
        assert "could not be loaded" not in rclient.get("/keys/").content.decode()
        assert org_calls(standin) == 2


@pytest.mark.postgres
def test_parallel_processes_share_one_call(transactional_db, standin):
    """Threads with their own database connections stand in for workers and instances: the gate
    (`cache.add` on the database cache) lets one call through; the others wait for its answer.
    PostgreSQL only: the SQLite test database is one in-memory database shared between threads,
    which answers concurrent writers with "table is locked" instead of waiting as a file does."""
    standin.latency = 0.3
    answers = run_together(*[usage.org_usage] * 6)  # raises what any of them raised
    assert len(answers) == 6 and all(a.ok for a in answers)
    assert org_calls(standin) == 1


def test_the_chart_is_cached_per_key_and_period(standin, requester, rclient):
    key = issued(standin, requester, "k", "10")
    path = f"/v1/manage/apikey/{key.api_key_id}/usage"
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(5):
            assert 'class="chart"' in rclient.get(f"/keys/{key.pk}/usage/", **HTMX).content.decode()
        assert len(standin.calls_to("GET", path)) == 1
        clock.shift(timedelta(seconds=61))
        rclient.get(f"/keys/{key.pk}/usage/", **HTMX)
        assert len(standin.calls_to("GET", path)) == 2


def test_one_person_cannot_make_the_portal_call_faster_than_the_bound(standin, requester, admin_user, aclient):
    keys = [issued(standin, requester, f"k{i}", "10") for i in range(usage.CHART_CALLS_PER_PERSON + 2)]
    with time_machine.travel(timezone.now(), tick=False) as clock:
        answers = [aclient.get(f"/keys/{k.pk}/usage/", **HTMX).content.decode() for k in keys]
        calls = len(standin.calls_to("GET", "/v1/manage/apikey/"))
        assert calls == usage.CHART_CALLS_PER_PERSON
        assert all('class="chart"' in a for a in answers[: usage.CHART_CALLS_PER_PERSON])
        assert 'role="alert"' in answers[-1] and "many keys" in answers[-1]
        # Someone else is not held back, and a chart already fetched is still shown.
        other = Client()
        other.force_login(requester)
        assert 'class="chart"' in other.get(f"/keys/{keys[-1].pk}/usage/", **HTMX).content.decode()
        assert 'class="chart"' in aclient.get(f"/keys/{keys[0].pk}/usage/", **HTMX).content.decode()
        clock.shift(timedelta(minutes=1))
        assert 'class="chart"' in aclient.get(f"/keys/{keys[-2].pk}/usage/", **HTMX).content.decode()


def test_last_used_in_my_keys_all_keys_and_the_key_page(standin, requester, rclient, aclient):
    standin.fake_usage = False
    used, unused = issued(standin, requester, "used", "10"), issued(standin, requester, "unused", "10")
    day = timezone.now().date() - timedelta(days=3)
    spend(standin, used, "0.10", day)
    shown = f'<time datetime="{day:%Y-%m-%d}">{day:%Y-%m-%d}</time>'
    for page in (rclient.get("/keys/"), aclient.get("/keys/"), rclient.get(f"/keys/{used.pk}/")):
        html = page.content.decode()
        assert "Last used (UTC)" in html and shown in html
    assert "Not in the last" in rclient.get(f"/keys/{unused.pk}/").content.decode()


def test_housekeeping_shares_the_one_call_and_keeps_last_used(standin, requester):
    from io import StringIO

    from django.core.management import call_command

    from keys.models import IssuedKey

    standin.fake_usage = False
    key = issued(standin, requester, "k", "10")
    day = timezone.now().date() - timedelta(days=2)
    spend(standin, key, "1.00", day)
    out = StringIO()
    call_command("housekeeping", stdout=out, stderr=out)
    report = out.getvalue()
    for job in ("spend_history: done", "budget_alerts: done", "idle_keys: done", "labels: done"):
        assert job in report
    assert org_calls(standin) == 1  # three jobs, one organization usage call
    assert IssuedKey.objects.get().last_used_on == day
