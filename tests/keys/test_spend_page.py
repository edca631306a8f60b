"""/spend/ and its CSV (keys/spend_views.py): who may see it, its figures against known stand-in
spend, the team filter, the six-month trend, the export's neutralisation, and never a call per key."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from keys import spend as spend_figures
from keys import usage
from keys.models import SpendingPolicy
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import frozen_clock
from tests.keys.spend_helpers import ORG_USAGE, issued, org_calls, spend

NOW = datetime(2026, 11, 14, 12, 0, tzinfo=UTC)


clock = frozen_clock(NOW, recorded_usage=True)


@pytest.fixture
def fclient(db) -> Client:
    """Finance: "Can view spend", nothing else."""
    user = User.objects.create_user("fiona", "fiona@example.com", "pw")
    user.user_permissions.add(Permission.objects.get(codename="view_spend"))
    client = Client()
    client.force_login(user)
    return client


def team(user, name: str) -> None:
    group = Group.objects.create(name=name)
    SpendingPolicy.objects.create(group=group, max_key_limit=50, max_total_limit=500, max_active_keys=10)
    user.groups.add(group)


@pytest.fixture
def known(standin, clock, requester, requester2):
    """rita (team alpha): $3 this month, $2 last month; rob (no team): $8 of $10; a key made outside
    the portal: $1."""
    team(requester, "alpha")
    a, b = issued(standin, requester, "alpha-key", "50"), issued(standin, requester2, "rob-key", "10")
    spend(standin, a, "3.00")
    spend(standin, a, "2.00", date(2026, 10, 20))
    spend(standin, b, "8.00")
    outside = standin.add_key("made in the dashboard")
    standin.record_usage(outside["id"], "2026-11-02", "1.00")
    return a, b, outside


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def test_who_may_see_it(standin, clock, rclient, aclient, fclient, superuser):
    for path in ("/spend/", "/spend/export.csv"):
        assert Client().get(path).status_code == 302
        assert rclient.get(path).status_code == 403
        assert fclient.get(path).status_code == 200
        assert aclient.get(path).status_code == 200
        assert fclient.post(path).status_code == 405
    boss = Client()
    boss.force_login(superuser)
    assert boss.get("/spend/").status_code == 200
    assert 'href="/spend/"' in fclient.get("/keys/").content.decode()
    assert 'href="/spend/"' not in rclient.get("/keys/").content.decode()


def test_figures_by_team_person_and_key(known, fclient, standin):
    page = text(fclient.get("/spend/"))
    assert "This month so far (2026-11) $12.00" in page and "Last month (2026-10) $2.00" in page
    assert "alpha $3.00 $2.00" in page and "(no team) $8.00 $0.00" in page and "(not from the portal) $1.00" in page
    assert "rita alpha $3.00 $2.00" in page and "rob (no team) $8.00 $0.00" in page
    near = page.split("Keys at or above 80% of their limit")[1].split("By team")[0]
    assert "rob-key rob (no team) $8.00 $10.00 80%" in near and "alpha-key" not in near
    assert org_calls(standin) == 1 and standin.calls_to("GET", "/v1/manage/apikey/") == []


def test_the_team_filter(known, fclient):
    page = text(fclient.get("/spend/?team=alpha"))
    assert "This month so far (2026-11) $3.00" in page and "rob-key" not in page
    response = fclient.get("/spend/?team=nonsense")
    assert response.status_code == 400
    assert re.search(r'role="alert">There is no team by that name', response.content.decode())
    assert "$12.00" in text(response)  # every team, as the alert says


def test_the_six_month_trend_keeps_finished_months(standin, clock, fclient, requester):
    key = issued(standin, requester, "k", "100")
    clock.move_to(datetime(2026, 8, 14, tzinfo=UTC))
    spend(standin, key, "4.00", date(2026, 7, 10))
    spend_figures.remember(usage.org_usage())  # the hourly housekeeping job
    clock.move_to(NOW)
    spend(standin, key, "1.50")
    html = fclient.get("/spend/").content.decode()
    months = re.findall(r"<tr><td>(\d{4}-\d\d)</td><td>([\d.]+)</td></tr>", html)
    assert months == [
        ("2026-06", "0.00"),
        ("2026-07", "4.00"),
        ("2026-08", "0.00"),
        ("2026-09", "0.00"),
        ("2026-10", "0.00"),
        ("2026-11", "1.50"),
    ]
    assert html.count('class="bar"') == 6 and 'role="img"' in html


def test_the_export_is_neutralised_and_audited(standin, clock, aclient, requester):
    requester.username = "@rita"
    requester.save()
    key = issued(standin, requester, '=HYPERLINK("http://evil")', "10")
    spend(standin, key, "-0")  # a request with no cost still shows the key
    spend(standin, key, "2.00")
    response = aclient.get("/spend/export.csv")
    assert response["Content-Type"].startswith("text/csv") and "no-store" in response["Cache-Control"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:4] == ["key_name", "api_key_id", "owner", "team"]
    assert rows[1][0] == '\'=HYPERLINK("http://evil")' and rows[1][2] == "'@rita" and rows[1][6] == "2.00"
    event = AuditEvent.objects.get(action="spend.exported")
    assert event.actor_username == "ada" and "team=all; 1 keys" in event.detail


def test_without_the_organization_usage_the_page_says_so_and_calls_no_key(known, fclient, standin):
    standin.inject(Fault.status(502), method="GET", path=ORG_USAGE)
    response = fclient.get("/spend/")
    assert response.status_code == 503 and 'role="alert"' in response.content.decode()
    assert "never asks Requesty key by key" in text(response)
    assert standin.calls_to("GET", "/v1/manage/apikey/") == []
    assert fclient.get("/spend/export.csv").status_code == 503
