"""Budget alerts (keys/alerts.py): each key's and each person's alert once per threshold and month,
by e-mail and to the webhook, whose failure blocks nothing. Spend is recorded in the stand-in and
read over HTTP; time is moved with time-machine."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Group
from django.core import mail

from keys import alerts
from keys.models import BudgetAlert, SpendingPolicy
from portal.audit.models import AuditEvent
from tests.keys.helpers import frozen_clock
from tests.keys.spend_helpers import issued, spend

MID_MONTH = datetime(2026, 11, 14, 12, 0, tzinfo=UTC)


clock = frozen_clock(MID_MONTH)


@pytest.fixture
def recorded(standin):
    standin.fake_usage = False
    return standin


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.received, server.status = [], 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def later(clock, seconds: int = 61) -> None:
    clock.shift(timedelta(seconds=seconds))  # past PORTAL_SPEND_CACHE_SECONDS: fresh figures


def test_each_key_alert_once_per_threshold_and_month(recorded, requester, clock, settings):
    settings.PORTAL_BASE_URL = "https://keys.example.com"
    key = issued(recorded, requester, "laptop", "10")
    spend(recorded, key, "7.00")
    assert alerts.check() == "0 budget alert(s) sent"
    spend(recorded, key, "1.50")  # 85%
    later(clock)
    assert alerts.check() == "1 budget alert(s) sent"
    (message,) = mail.outbox
    assert message.to == ["rita@example.com"] and "85%" in message.subject
    assert "$8.50 of its $10.00" in message.body and f"https://keys.example.com/keys/{key.pk}/" in message.body
    later(clock)
    assert alerts.check() == "0 budget alert(s) sent"  # 80% was said this month
    spend(recorded, key, "1.50")  # 100%
    later(clock)
    assert alerts.check() == "1 budget alert(s) sent"
    assert len(mail.outbox) == 2 and "100%" in mail.outbox[1].subject
    assert list(BudgetAlert.objects.values_list("threshold", flat=True).order_by("threshold")) == [80, 100]
    assert AuditEvent.objects.filter(action="spend.alert_sent", api_key_id=key.api_key_id).count() == 2
    # A new month starts again from nothing: its own alerts.
    clock.move_to(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    spend(recorded, key, "9.00")
    assert alerts.check() == "1 budget alert(s) sent"
    assert BudgetAlert.objects.filter(month="2026-12-01").count() == 1


def test_a_person_total_against_their_policy(recorded, requester, clock):
    group = Group.objects.create(name="team")
    SpendingPolicy.objects.create(group=group, max_key_limit=20, max_total_limit=20, max_active_keys=5)
    requester.groups.add(group)
    first, second = issued(recorded, requester, "a", "20"), issued(recorded, requester, "b", "20")
    spend(recorded, first, "9.00")
    spend(recorded, second, "8.00")  # 85% of the total; each key under 80% of its own limit
    assert alerts.check() == "1 budget alert(s) sent"
    (message,) = mail.outbox
    assert "monthly total" in message.subject and "$17.00" in message.body and "$20.00" in message.body
    assert BudgetAlert.objects.get().kind == "person"
    later(clock)
    assert alerts.check() == "0 budget alert(s) sent"


def test_keys_without_a_cap_and_admins_without_a_total_get_none(recorded, requester, admin_user, clock):
    uncapped = issued(recorded, requester, "uncapped", "0")
    admins = issued(recorded, admin_user, "admins", "1000")
    spend(recorded, uncapped, "50")  # 10% of the default policy total (500)
    spend(recorded, admins, "10")
    assert alerts.check() == "0 budget alert(s) sent" and mail.outbox == []


def test_the_webhook_gets_each_alert_and_its_failure_blocks_nothing(
    recorded, requester, requester2, clock, webhook, settings
):
    settings.PORTAL_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    webhook.status = 500  # failing: logged, no retry, the other alerts still go out
    keys = [issued(recorded, requester, "r", "10"), issued(recorded, requester2, "s", "10")]
    for key in keys:
        spend(recorded, key, "9.00")
    assert alerts.check() == "2 budget alert(s) sent"
    assert len(mail.outbox) == 2 and len(webhook.received) == 2  # each tried once, never again
    assert all(set(body) == {"text"} and "90%" in body["text"] for body in webhook.received)
    later(clock)
    assert alerts.check() == "0 budget alert(s) sent" and len(webhook.received) == 2
    settings.PORTAL_ALERT_WEBHOOK_URL = "http://127.0.0.1:9/unreachable"
    spend(recorded, keys[0], "1.00")
    later(clock)
    assert alerts.check() == "1 budget alert(s) sent"  # refused connection: logged, alert still counted


def test_a_mail_failure_leaves_the_alert_for_the_next_run(recorded, requester, clock, monkeypatch):
    key = issued(recorded, requester, "k", "10")
    spend(recorded, key, "9.00")

    def down(*args, **kwargs):
        raise OSError("mail server down")

    monkeypatch.setattr(alerts, "send_mail", down)
    with pytest.raises(RuntimeError, match="could not be sent"):
        alerts.check()
    assert not BudgetAlert.objects.exists() and not AuditEvent.objects.filter(action="spend.alert_sent").exists()
    monkeypatch.undo()
    assert alerts.check() == "1 budget alert(s) sent"
