"""The audit log's pages (/audit/): who may see them, what a row shows, htmx fragments and the
status line, filters and keyset pages, a key's and an event's history. Exports:
test_audit_export.py; the chain itself: test_audit_chain.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test import Client

from portal.audit import chain
from portal.audit.models import AuditEvent
from portal.audit.views import PAGE_SIZE
from tests.audit.helpers import HOSTILE, HTMX, event, seqs, unprotected


# --- Access ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/audit/", "/audit/events/1/", "/audit/keys/k-1/", "/audit/export.csv", "/audit/export.jsonl"]
)
def test_access_matrix(path, client, rclient, aclient, auclient, superuser, requester):
    event(actor=requester, api_key_id="k-1")
    assert client.get(path).status_code == 302  # anonymous: to sign in
    assert rclient.get(path).status_code == 403  # requester
    assert aclient.get(path).status_code == 403  # portal admin permission alone is not audit access
    assert auclient.get(path).status_code == 200  # "Portal admins" group
    su = Client()
    su.force_login(superuser)
    assert su.get(path).status_code == 200


def test_wrong_method(auclient):
    assert auclient.post("/audit/").status_code == 405
    assert auclient.post("/audit/export.csv").status_code == 405


def test_row_shows_everything_but_secrets(auclient, requester, settings):
    event(
        actor=requester,
        api_key_id="3c90c3cc-0d44-4b50-8888-8dd25736052a",
        key_name="laptop",
        monthly_limit=Decimal("25"),
        manage="none",
        completions="write",
        source_ip="10.1.2.3",
        upstream_status=201,
    )
    html = auclient.get("/audit/").content.decode()
    for text in (
        "rita",
        "rita@example.com",
        "mint.issued",
        "success",
        "laptop",
        "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "$25.00",
        "manage none, completions write",
        "10.1.2.3",
        "201",
        'datetime="',
    ):
        assert text in html
    assert settings.REQUESTY_ADMIN_TOKEN not in html


def test_a_row_reads_the_same_whatever_it_holds(auclient, requester):
    """A row's cells exactly (they are worked out once per row in the view, not by template filters):
    the action's label, the time in UTC to the second with its ISO 8601 `datetime`, "—" for a
    missing actor or permission level, the limit in dollars, a key id that its link must quote."""
    event(action="mint.denied", outcome="denied", key_name="", api_key_id="k 1", completions="write")
    event(actor=requester, key_name="laptop", monthly_limit=Decimal("1234.5"), manage="none", upstream_status=201)
    when = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    with unprotected() as cursor:
        cursor.execute("UPDATE keys_auditevent SET created_at = %s", [when])
        cursor.execute("UPDATE keys_auditevent SET actor_username = '' WHERE seq = 1")
    rows = re.findall(r"<tr>\s*(.*?)\s*</tr>", auclient.get("/audit/").content.decode(), re.DOTALL)[1:]
    time = '<td><time datetime="2026-03-04T05:06:07.890000+00:00" data-local>2026-03-04 05:06:07</time></td>'
    cells = [re.sub(r"\n\s*", "", row) for row in rows]
    assert cells == [
        "<td>2</td>" + time + '<td>rita<br><span class="muted">rita@example.com</span></td>'
        '<td>Key created<br><code class="muted">mint.issued</code></td>'
        '<td><span class="outcome outcome-success">success</span></td><td>laptop</td>'
        '<td>$1,234.50<br><span class="muted">manage none, completions —</span></td><td></td><td>201</td>'
        '<td><a href="/audit/events/2/">Details<span class="visually-hidden"> of event 2</span></a></td>',
        "<td>1</td>" + time + "<td>—</td>"
        '<td>Key request refused by policy<br><code class="muted">mint.denied</code></td>'
        '<td><span class="outcome outcome-denied">denied</span></td>'
        '<td><br><a href="/audit/keys/k%201/" class="muted">k 1</a></td>'
        '<td><br><span class="muted">manage —, completions write</span></td><td></td><td></td>'
        '<td><a href="/audit/events/1/">Details<span class="visually-hidden"> of event 1</span></a></td>',
    ]
    history = auclient.get("/audit/keys/k%201/").content.decode()
    assert '<time datetime="2026-03-04T05:06:07.890000+00:00" data-local>2026-03-04 05:06:07 UTC</time>' in history
    assert "Key request refused by policy" in history and 'href="/audit/events/1/">event #1</a>' in history


def test_actor_as_they_were_at_the_time(auclient, requester):
    event(actor=requester)
    requester.username, requester.email = "rita-renamed", "new@example.com"
    requester.save()
    html = auclient.get("/audit/?actor=rita").content.decode()
    assert "rita@example.com" in html
    requester.delete()
    assert "rita@example.com" in auclient.get("/audit/?actor=rita").content.decode()


def test_htmx_gets_the_fragment_and_plain_gets_the_page(auclient):
    event()
    assert "<html" in auclient.get("/audit/").content.decode()
    fragment = auclient.get("/audit/", **HTMX)
    assert "<html" not in fragment.content.decode() and 'id="audit-results"' in fragment.content.decode()
    assert "HX-Request" in fragment["Vary"]


@pytest.mark.parametrize(
    "headers",
    [{}, {**HTMX, "HTTP_HX_BOOSTED": "true"}, {**HTMX, "HTTP_HX_HISTORY_RESTORE_REQUEST": "true"}],
    ids=["plain", "boosted", "history-restore"],
)
def test_whole_page_answers_vary_on_hx_request_too(auclient, headers):
    """Boosted navigations and history restores replace the whole document: they get the page,
    which a cache must not hand to an htmx swap (nor the fragment to them)."""
    event()
    page = auclient.get("/audit/", **headers)
    html = page.content.decode()
    assert "<html" in html and 'id="audit-results"' in html
    assert "hx-swap-oob" not in html  # the status line sits in the page once, not out of band
    assert "HX-Request" in page["Vary"]


STATUS = re.compile(r'<p id="audit-status" role="status"[^>]*>([^<]*)</p>')


def status_line(html: str) -> tuple[str, str]:
    """The one status element: its opening tag and its text."""
    found = list(STATUS.finditer(html))
    assert len(found) == 1, found
    return found[0].group(0).split(">", 1)[0], found[0].group(1)


def test_htmx_fragment_updates_the_status_line_out_of_band(auclient, requester, requester2):
    # The results section is replaced whole, so a live region inside it is new every time and is not
    # announced: the fragment refills the page's stable status line instead, out of band.
    for i in range(PAGE_SIZE + 3):
        event(actor=requester, key_name=f"r{i}")
    event(actor=requester2, key_name="b1")
    event(actor=requester2, key_name="b2")
    html = auclient.get("/audit/?actor=rob", **HTMX).content.decode()
    tag, text = status_line(html)
    assert text == "Showing all 2 matching events, newest first."
    # innerHTML, not true/outerHTML: an outerHTML swap would replace the live region itself.
    assert 'hx-swap-oob="innerHTML"' in tag
    # Out-of-band elements must be at the top level of the response, not inside the swapped section.
    assert html.index("</section>") < html.index('id="audit-status"')
    assert "aria-live" not in html

    first = auclient.get("/audit/?actor=rita", **HTMX).content.decode()
    newest = f"Showing the {PAGE_SIZE} newest matching events (#{PAGE_SIZE + 3} to #4)"
    assert status_line(first)[1] == newest + "; older events are on the next pages."
    older = auclient.get("/audit/?actor=rita&before=4", **HTMX).content.decode()
    oldest = "Showing the 3 oldest matching events (#3 to #1)"
    assert status_line(older)[1] == oldest + "; newer events are on the previous pages."
    none = auclient.get("/audit/?actor=nobody", **HTMX).content.decode()
    assert status_line(none)[1] == "No events match these filters."
    bad = auclient.get("/audit/?since=yesterday", **HTMX).content.decode()
    assert status_line(bad)[1] == "No events shown: correct the filters above."


def test_full_page_has_the_status_line_outside_the_results(auclient, requester):
    event(actor=requester)
    html = auclient.get("/audit/?actor=rita").content.decode()
    tag, text = status_line(html)
    assert text == "Showing 1 matching event."
    assert "hx-swap-oob" not in tag  # a plain page: the text is simply there
    # Outside (before) the swapped section, so htmx swaps never replace it; the heading focus lands on too.
    assert html.index('id="audit-results-heading"') < html.index('id="audit-status"') < html.index('id="audit-results"')
    assert 'aria-describedby="audit-status"' in html and "aria-live" not in html


def test_viewing_and_exporting_are_audited(auclient, auditor):
    auclient.get("/audit/?actor=rita")
    b"".join(auclient.get("/audit/export.csv?outcome=denied").streaming_content)
    viewed = AuditEvent.objects.get(action="audit.viewed")
    exported = AuditEvent.objects.get(action="audit.exported")
    assert viewed.actor_username == exported.actor_username == "audrey"
    assert "actor=rita" in viewed.detail and "outcome=denied" in exported.detail and "csv" in exported.detail


# --- Filters and keyset pages ---------------------------------------------------------------------
def test_filters_combine(auclient, requester, requester2):
    event(actor=requester, action="mint.denied", outcome="denied", key_name="alpha")
    event(actor=requester, action="mint.issued", outcome="success", key_name="beta", api_key_id="id-beta")
    event(actor=requester2, action="mint.denied", outcome="denied", key_name="alphabet")
    assert len(seqs(auclient.get("/audit/?actor=rita"))) == 2
    assert seqs(auclient.get("/audit/?actor=rita&outcome=denied")) == [1]
    assert seqs(auclient.get("/audit/?q=alpha")) == [3, 1]
    assert seqs(auclient.get("/audit/?q=id-beta")) == [2]
    assert seqs(auclient.get("/audit/?action=mint.denied&q=bet")) == [3]


def test_date_range_is_utc_and_inclusive(auclient):
    for i in range(4):
        event(key_name=f"d{i}")
    with unprotected() as cursor:
        for seq, day in ((1, "2026-01-31"), (2, "2026-02-01"), (3, "2026-02-28"), (4, "2026-03-01")):
            when = datetime.fromisoformat(day).replace(hour=23, minute=59, tzinfo=UTC)
            cursor.execute("UPDATE keys_auditevent SET created_at = %s WHERE seq = %s", [when, seq])
    assert seqs(auclient.get("/audit/?since=2026-02-01&until=2026-02-28")) == [3, 2]


def test_bad_filters_get_an_alert(auclient):
    for query in ("since=yesterday", "since=2026-03-01&until=2026-02-01", "action=drop", "before=-1"):
        response = auclient.get("/audit/?" + query)
        assert 'role="alert"' in response.content.decode(), query
        assert seqs(response) == []


def test_keyset_pages_walk_every_event_once(auclient):
    total = PAGE_SIZE * 2 + 7
    for i in range(total):
        event(key_name=f"e{i}")
    first = auclient.get("/audit/")
    page1 = seqs(first)
    assert page1 == list(range(total, total - PAGE_SIZE, -1))
    page2 = seqs(auclient.get(f"/audit/?before={page1[-1]}"))
    page3 = seqs(auclient.get(f"/audit/?before={page2[-1]}"))
    assert page1 + page2 + page3 == list(range(total, 0, -1))
    assert 'rel="next"' not in auclient.get(f"/audit/?before={page2[-1]}").content.decode()
    # Back towards the newest, and straight to the oldest page.
    assert seqs(auclient.get(f"/audit/?after={page2[0]}")) == page1
    assert seqs(auclient.get("/audit/?last=1")) == list(range(PAGE_SIZE, 0, -1))


def test_pages_keep_the_filters_in_their_links(auclient, requester, requester2):
    for i in range(PAGE_SIZE * 2 + 3):
        event(actor=requester if i % 2 else requester2)
    html = auclient.get("/audit/?actor=rita").content.decode()
    older = re.search(r'href="\?([^"]*before=\d+)"', html).group(1).replace("&amp;", "&")
    assert "actor=rita" in older
    rest = seqs(auclient.get("/audit/?" + older))
    assert rest and all(AuditEvent.objects.get(seq=s).actor_username == "rita" for s in rest)
    assert 'hx-push-url="true"' in html


def test_same_timestamps_do_not_lose_rows(auclient):
    for i in range(PAGE_SIZE + 5):
        event(key_name=f"same{i}")
    with unprotected() as cursor:
        cursor.execute("UPDATE keys_auditevent SET created_at = %s", [datetime(2026, 5, 1, tzinfo=UTC)])
    page1 = seqs(auclient.get("/audit/"))
    page2 = seqs(auclient.get(f"/audit/?before={page1[-1]}"))
    assert sorted(page1 + page2) == list(range(1, PAGE_SIZE + 6))


def test_a_whole_key_id_is_matched_exactly(auclient):
    event(api_key_id="3c90c3cc-0d44-4b50-8888-8dd25736052a", key_name="a")
    event(api_key_id="3c90c3cc-0d44-4b50-8888-8dd25736052b", key_name="b")
    assert seqs(auclient.get("/audit/?q=3c90c3cc-0d44-4b50-8888-8dd25736052a")) == [1]
    assert seqs(auclient.get("/audit/?q=3c90c3cc")) == [2, 1]


def test_each_page_runs_a_bounded_number_of_queries(auclient, django_assert_max_num_queries):
    for _ in range(PAGE_SIZE + 5):
        event()
    for query in ("", "?before=20", "?after=3", "?last=1", "?actor=x&outcome=denied&since=2026-01-01"):
        # Session, user, permissions, the idle-timeout session write, the page, two edge probes and the
        # audit append: a fixed number, whatever the page or the size of the log.
        with django_assert_max_num_queries(14):
            auclient.get("/audit/" + query)


@pytest.mark.postgres
def test_filtered_page_uses_the_indexes_on_postgresql(db):
    from portal.audit.views import filtered

    since = datetime(2026, 1, 1).date()
    with time_machine.travel(datetime(2026, 1, 5, tzinfo=UTC), tick=False):
        event()  # a period with no event at all is answered without reading the table (periods.py)
    qs = filtered({"actor": "user0001", "since": since, "until": since + timedelta(days=30)}).order_by("-seq")[:51]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an empty table would be seq-scanned anyway
        plan = qs.explain()
    indexes = ("audit_actor_time", "audit_actor_seq", "keys_auditevent_created_at", "audit_seq_not_own")
    assert any(name in plan for name in indexes), plan
    first = AuditEvent.objects.order_by("-seq")[:51].explain()
    assert "Index Scan Backward" in first and "keys_auditevent_seq" in first, first


def test_one_actor_over_a_period_has_its_index(db):
    """(actor, time), audit 0007 (built CONCURRENTLY on PostgreSQL): one actor's month is read from
    the index, not by walking back through every later event of the actor."""
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, "keys_auditevent")
    assert indexes["audit_actor_time"]["columns"] == ["actor_username", "created_at"]


# --- Key and event detail -------------------------------------------------------------------------
def test_key_detail_lists_every_event_for_the_key_in_order(auclient, rclient, requester, standin):
    from keys.forms import new_nonce

    rclient.post(
        "/keys/new/",
        {"name": "k", "monthly_limit": "5", "manage": "none", "completions": "write", "nonce": new_nonce(requester)},
    )
    key_id = AuditEvent.objects.get(action="mint.issued").api_key_id
    html = auclient.get(f"/audit/keys/{key_id}/").content.decode()
    assert html.index("mint.requested") < html.index("mint.issued")  # the request before the id was known too
    assert auclient.get("/audit/keys/unknown/").status_code == 404


def test_event_detail_shows_the_chain(auclient):
    e = event()
    html = auclient.get(f"/audit/events/{e.seq}/").content.decode()
    assert e.hash in html and chain.GENESIS in html
    assert auclient.get("/audit/events/999/").status_code == 404


# --- Hostile key names ----------------------------------------------------------------------------
def test_hostile_names_render_inert(auclient):
    for name in HOSTILE:
        e = event(key_name=name, detail=name)
    html = auclient.get("/audit/").content.decode()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'hx-get="/keys/new/" hx-trigger="load' not in html
    assert "{{ 7*7 }}" in html and ">49<" not in html
    detail = auclient.get(f"/audit/events/{e.seq}/").content.decode()
    assert "<img src=x" not in detail
    assert "unsafe-inline" not in auclient.get("/audit/")["Content-Security-Policy"]
