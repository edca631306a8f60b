"""The audit log: access, filters, keyset pages, exports, hash chain and append-only storage."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client

from portal.audit import chain
from portal.audit.models import AuditEvent
from portal.audit.views import PAGE_SIZE

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


@pytest.fixture
def auditor(db) -> User:
    """A member of the "Portal admins" group the migration creates."""
    user = User.objects.create_user("audrey", "audrey@example.com", "pw-audrey")
    user.groups.add(Group.objects.get(name="Portal admins"))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def auclient(auditor) -> Client:
    client = Client()
    client.force_login(auditor)
    return client


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
    qs = filtered({"actor": "user0001", "since": since, "until": since + timedelta(days=30)}).order_by("-seq")[:51]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an empty table would be seq-scanned anyway
        plan = qs.explain()
    assert "audit_actor_seq" in plan or "keys_auditevent_created_at" in plan, plan
    first = AuditEvent.objects.order_by("-seq")[:51].explain()
    assert "Index Scan Backward" in first and "keys_auditevent_seq" in first, first


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


# --- Export ---------------------------------------------------------------------------------------
def test_csv_export_parses_and_neutralises_formulas(auclient, requester):
    for name in HOSTILE:
        event(actor=requester, key_name=name, detail=name)
    response = auclient.get("/audit/export.csv")
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"] and "no-store" in response["Cache-Control"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    names = [r for r in rows if r["action"] == "mint.issued"]
    assert len(names) == len(HOSTILE)
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), value
        assert datetime.fromisoformat(row["time_utc"]).utcoffset() == timedelta(0)
    assert {r["key_name"] for r in names} >= {
        '\'=HYPERLINK("http://evil")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "line1\r\nline2",
    }


def test_jsonl_export_parses_line_by_line(auclient):
    for name in HOSTILE:
        event(key_name=name)
    body = b"".join(auclient.get("/audit/export.jsonl").streaming_content).decode()
    lines = body.split("\n")[:-1]
    records = [json.loads(line) for line in lines]
    assert len(records) == len(HOSTILE)
    assert [r["key_name"] for r in records] == HOSTILE[::-1]  # raw values: JSON needs no neutralising


def test_filtered_export_has_exactly_the_filtered_rows(auclient, requester, requester2):
    for i in range(30):
        event(actor=requester if i % 3 == 0 else requester2, key_name=f"n{i}")
    query = "actor=rita"
    shown = seqs(auclient.get("/audit/?" + query))
    rows = list(
        csv.DictReader(io.StringIO(b"".join(auclient.get("/audit/export.csv?" + query).streaming_content).decode()))
    )
    assert [int(r["seq"]) for r in rows] == shown
    assert all(r["actor_username"] == "rita" for r in rows)


def test_export_walks_batches(auclient, monkeypatch):

    import portal.audit.views

    monkeypatch.setattr(portal.audit.views, "EXPORT_BATCH", 7)
    for i in range(23):
        event(key_name=f"b{i}")
    body = b"".join(auclient.get("/audit/export.jsonl").streaming_content).decode()
    assert [json.loads(line)["seq"] for line in body.splitlines()] == list(range(23, 0, -1))


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


# --- Hash chain -----------------------------------------------------------------------------------
def five_events():
    return [event(key_name=f"chain{i}") for i in range(5)]


def verify_output(*args) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def verify_error(*args) -> str:
    with pytest.raises(CommandError) as info:
        call_command("verify_audit", *args, stdout=io.StringIO())
    return str(info.value)


def test_clean_chain_verifies(db):
    five_events()
    assert "5 events verified" in verify_output()
    assert "0 events verified" not in verify_output()


def test_changed_field_is_named(db):
    five_events()
    with unprotected() as cursor:
        cursor.execute("UPDATE keys_auditevent SET key_name = 'innocent' WHERE seq = 3")
    assert "Event #3 was changed" in verify_error()


def test_deleted_middle_row_is_named(db):
    five_events()
    with unprotected() as cursor:
        cursor.execute("DELETE FROM keys_auditevent WHERE seq = 2")
    assert "Event #2 is missing" in verify_error()


def test_swapped_rows_are_named(db):
    five_events()
    with unprotected() as cursor:
        cursor.execute("UPDATE keys_auditevent SET seq = -2 WHERE seq = 2")
        cursor.execute("UPDATE keys_auditevent SET seq = 2 WHERE seq = 4")
        cursor.execute("UPDATE keys_auditevent SET seq = 4 WHERE seq = -2")
    assert "#2" in verify_error()


def test_renumbered_rehashed_tail_is_caught_by_the_link(db):
    """An attacker without the HMAC key deletes #3 and renumbers the rest: the link breaks."""
    five_events()
    with unprotected() as cursor:
        cursor.execute("DELETE FROM keys_auditevent WHERE seq = 3")
        cursor.execute("UPDATE keys_auditevent SET seq = seq - 1 WHERE seq > 3")
    message = verify_error()
    assert "#3" in message


def test_dropped_tail_needs_the_recorded_head(db):
    five_events()
    head = verify_output("--head").strip()
    assert head.startswith("5:") and len(head) == 2 + 64
    with unprotected() as cursor:
        cursor.execute("DELETE FROM keys_auditevent WHERE seq >= 4")
    assert "3 events verified" in verify_output()  # the chain alone cannot tell
    assert "Events after #3 were removed" in verify_error("--expect-head", head)


def test_wrong_hmac_key_fails_verification(db, settings):
    five_events()
    settings.AUDIT_HMAC_KEY = "another-key"
    assert "Event #1 was changed" in verify_error()


def test_the_model_refuses_updates_and_deletes(db):
    e = event()
    with pytest.raises(PermissionError):
        e.save()
    with pytest.raises(PermissionError):
        e.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().update(outcome="success")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE keys_auditevent SET outcome = 'success'",
        "DELETE FROM keys_auditevent",
        "TRUNCATE keys_auditevent CASCADE",
    ],
)
def test_postgresql_trigger_refuses_changes(db, sql):
    from django.db import DatabaseError

    event()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE keys_auditevent ENABLE TRIGGER USER")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEvent.objects.count() == 1


def test_admin_registration_is_read_only(superuser):
    client = Client()
    client.force_login(superuser)
    e = event()
    assert client.get("/admin/audit/auditevent/").status_code == 200
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert client.post(f"/admin/audit/auditevent/{e.pk}/delete/").status_code == 403
    page = client.get(f"/admin/audit/auditevent/{e.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page  # a view page, no save buttons
    assert client.post(f"/admin/audit/auditevent/{e.pk}/change/", {"outcome": "success"}).status_code == 403


def test_a_whole_key_id_is_matched_exactly(auclient):
    event(api_key_id="3c90c3cc-0d44-4b50-8888-8dd25736052a", key_name="a")
    event(api_key_id="3c90c3cc-0d44-4b50-8888-8dd25736052b", key_name="b")
    assert seqs(auclient.get("/audit/?q=3c90c3cc-0d44-4b50-8888-8dd25736052a")) == [1]
    assert seqs(auclient.get("/audit/?q=3c90c3cc")) == [2, 1]


# --- Concurrent appends (PostgreSQL) --------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_append_waiting_for_the_lock_chains_onto_what_committed_meanwhile():
    """The lock-then-read-head call (migration 0008) must read the head *after* the lock is
    granted: B starts while A holds the lock, and must follow A's event, not fork beside it."""
    import threading
    import time

    from django.db import connections

    a_holds, a_may_commit, results = threading.Event(), threading.Event(), {}

    def append(name, hold):
        try:
            with transaction.atomic():
                results[name] = event(key_name=name)
                if hold:
                    a_holds.set()
                    a_may_commit.wait(10)
        finally:
            connections.close_all()

    first = event(key_name="before")
    a = threading.Thread(target=append, args=("a", True))
    a.start()
    assert a_holds.wait(10)
    b = threading.Thread(target=append, args=("b", False))
    b.start()
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:  # wait until B is queued on the advisory lock
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            if cursor.fetchone()[0]:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the second append never waited for the chain's lock")
    a_may_commit.set()
    a.join(10)
    b.join(10)
    assert (results["a"].seq, results["b"].seq) == (first.seq + 1, first.seq + 2)
    assert results["b"].prev_hash == results["a"].hash
    assert chain.verify().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgresql_transactions_are_read_committed_whatever_the_server_default():
    """The chain's lock-then-read and the mint's lock-then-count need READ COMMITTED."""
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION default_transaction_isolation = 'repeatable read'")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone()[0] == "read committed"
    finally:
        connection.close()  # the session setting goes with the connection
