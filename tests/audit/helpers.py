"""What the audit tests share: events appended straight to the chain, reading them back, and
changes made in Django's admin with the events they append."""

from __future__ import annotations

import re

from django.db import connection

from portal.audit import chain
from portal.audit.models import AuditEvent

HTMX = {"HTTP_HX_REQUEST": "true"}
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    '" hx-get="/keys/new/" hx-trigger="load',
    "{{ 7*7 }}",
    "line1\r\nline2",
    "evil\u202egnp.exe",
    '=HYPERLINK("http://evil")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
]


def event(**values) -> AuditEvent:
    values.setdefault("key_name", "k")
    return chain.record(values.pop("action", "mint.issued"), values.pop("outcome", "success"), **values)


def seqs(response) -> list[int]:
    return [int(s) for s in re.findall(r'href="/audit/events/(\d+)/"', response.content.decode())]


def unprotected():
    """Raw SQL that bypasses the model, as an attacker with database access would; on PostgreSQL
    the append-only trigger is switched off inside this test's transaction (rolled back after)."""
    cursor = connection.cursor()
    if connection.vendor == "postgresql":
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses pending FK checks
        cursor.execute("ALTER TABLE keys_auditevent DISABLE TRIGGER USER")
    return cursor


def appended(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=since).order_by("seq"))


def head_seq() -> int:
    return (chain.head() or (0, ""))[0]


def assert_one_chained_event(since: int, action: str, actor) -> AuditEvent:
    events = appended(since)
    assert [e.action for e in events] == [action]
    event = events[0]
    assert (event.actor_id, event.actor_username, event.outcome) == (actor.pk, "sam", "success")
    assert event.source_ip == "127.0.0.1"
    previous = AuditEvent.objects.filter(seq=event.seq - 1).values_list("hash", flat=True).first()
    assert event.prev_hash == (previous or chain.GENESIS)
    assert chain.verify().ok
    return event


def admin_post(client, url: str, data: dict) -> None:
    """POST to a page of Django's admin, which answers a saved form or a confirmed action with a
    redirect (and shows the page again, with its errors, when it refused)."""
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]


def delete_selected(client, changelist: str, pks: list) -> None:
    """The admin's "Delete selected" action on these rows of a change list, confirmed."""
    admin_post(client, changelist, {"action": "delete_selected", "_selected_action": pks, "post": "yes"})


def admin_event(client, url: str, data: dict, action: str, actor) -> AuditEvent:
    """POST to an admin page (accepted) and the one chained event it appended."""
    since = head_seq()
    admin_post(client, url, data)
    return assert_one_chained_event(since, action, actor)
