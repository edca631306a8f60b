"""The log's own events (issue 13, item 12): viewing and exporting the log stay audited, but plain
browsing no longer pushes real events off the first page; and the pager's edge probes, which stop
at the cursor, stay exact for cursors that do not match the filters."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection

from portal.audit.models import OWN_ACTIONS, AuditEvent
from portal.audit.views import PAGE_SIZE, filtered
from tests.audit.helpers import event, seqs


def test_browsing_the_log_does_not_crowd_out_real_events(auclient, requester):
    real = [event(actor=requester, key_name=f"real {i}").seq for i in range(3)]
    for _ in range(PAGE_SIZE + 5):
        auclient.get("/audit/")
    assert AuditEvent.objects.filter(action="audit.viewed").count() == PAGE_SIZE + 5  # still audited
    html = auclient.get("/audit/").content.decode()
    assert seqs(auclient.get("/audit/")) == real[::-1]
    assert "<td>Audit log viewed<br>" not in html and "Showing all 3 events" in html
    assert 'id="id_own"' in html and "Also show views and exports of this log" in html
    shown = seqs(auclient.get("/audit/?own=on"))
    assert len(shown) == PAGE_SIZE and all(AuditEvent.objects.get(seq=s).action == "audit.viewed" for s in shown)
    # Asking for one of the log's own actions shows it without the box.
    assert len(seqs(auclient.get("/audit/?action=audit.viewed"))) == PAGE_SIZE
    # The box travels with the filters (pager and export links).
    assert "own=on" in auclient.get("/audit/?own=on").content.decode().split("Export this view")[1]


def test_event_and_key_pages_are_audited(auclient, auditor):
    shown = event(api_key_id="k-7", key_name="seven")
    assert auclient.get(f"/audit/events/{shown.seq}/").status_code == 200
    assert auclient.get("/audit/keys/k-7/").status_code == 200
    views = AuditEvent.objects.filter(action="audit.viewed").order_by("seq")
    assert [(v.detail, v.actor_username) for v in views] == [(f"event={shown.seq}", "audrey"), ("key=k-7", "audrey")]
    assert auclient.get("/audit/events/999/").status_code == 404
    assert views.count() == 2  # nothing shown, nothing recorded


def test_exports_are_audited_and_keep_the_logs_own_events(auclient):
    """The screen hides views and exports of the log by default; an export is the record, so it
    keeps them (with or without the box), and is audited itself."""
    event(key_name="real")
    auclient.get("/audit/")
    default = b"".join(auclient.get("/audit/export.jsonl").streaming_content).decode()
    assert default.count("\n") == 2 and '"real"' in default and default.count('"audit.viewed"') == 1
    same = b"".join(auclient.get("/audit/export.jsonl?own=on").streaming_content).decode()
    assert same.count('"audit.viewed"') == 1 and same.count('"audit.exported"') == 1  # the first export
    assert AuditEvent.objects.filter(action="audit.exported").count() == 2


def test_pager_edges_are_exact_for_a_cursor_outside_the_filters(auclient, requester, requester2):
    """A hand-made cursor (an event the filters do not match) still gets the right links."""
    rita = [event(actor=requester).seq for _ in range(3)]
    rob = event(actor=requester2).seq  # newest of all
    page = auclient.get(f"/audit/?actor=rita&before={rob}")
    assert seqs(page) == rita[::-1] and "‹ Newer" not in page.content.decode()
    first_rob = event(actor=requester2).seq
    event(actor=requester)  # a newer rita event: now there is a newer page
    page = auclient.get(f"/audit/?actor=rita&before={first_rob}")
    assert seqs(page) == rita[::-1] and "‹ Newer" in page.content.decode()
    older = auclient.get(f"/audit/?actor=rita&after={rob}").content.decode()
    assert "Older ›" in older and "‹ Newer" not in older
    assert "Older ›" not in auclient.get(f"/audit/?actor=rita&after={rita[0] - 1}").content.decode()


@pytest.mark.postgres
def test_key_name_search_and_its_pager_use_the_trigram_indexes(db):
    """pg_trgm GIN indexes (audit 0002) serve `icontains` on the key's name and id, for the page
    and for the edge probe that starts at the cursor."""
    for i in range(5):
        event(key_name=f"laptop-{i}", api_key_id=f"id-{i}")
    search = filtered({"q": "ptop-3", "own": True})  # all events: only the trigram indexes can narrow them
    with connection.cursor() as cursor:
        # On a near-empty table the planner may walk the seq index backwards and filter: rule
        # out plain scans so the question is only whether the trigram indexes can serve the term.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = search.order_by("-seq")[:51].explain()
    assert "audit_key_name_trgm" in plan and "audit_api_key_id_trgm" in plan, plan
    assert [e.key_name for e in search] == ["laptop-3"]


def test_a_search_matches_what_the_whole_term_matches(db):
    """The search adds the term's words as conditions of their own (for the trigram index, see
    the next test): the matches must be exactly the events whose name or id holds the whole term,
    ignoring case, with LIKE's wildcards taken literally."""
    names = ["key-588721", "KEY-588721-old", "key 588721", "588721-key", "laptop_42%", "laptopX42%",
             "Ünïcode-Straße", "a-b-c-key", "key-5887210", "", "keys-1234"]  # fmt: skip
    for i, name in enumerate(names):
        event(key_name=name, api_key_id=f"id-{i}-{name[::-1]}")
    terms = ["key-588721", "Key-588721", "588721-key", "laptop_42%", "p_4", "Straße", "a-b-c-key", "eys-12",
             "127885-yek", "0-id", "key", "ke", "%", "_", "nothing-here"]  # fmt: skip
    for term in terms:
        expected = [
            n for i, n in enumerate(names) if term.lower() in n.lower() or term.lower() in f"id-{i}-{n[::-1]}".lower()
        ]
        found = sorted(filtered({"q": term}).values_list("key_name", flat=True), key=names.index)
        assert found == expected, term


@pytest.mark.postgres
def test_a_search_asks_the_index_for_its_longest_word_first(db):
    """GIN walks an index condition's keys in order, and a key that matches nearly every name (the
    "key" of "key-123456") costs its whole posting list when it leads: the longest word comes first,
    then the shorter ones, then the whole term."""
    for i in range(5):
        event(key_name=f"key-58872{i}")
    search = filtered({"q": "key-588721", "own": True})  # all events: only the trigram indexes can narrow them
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = search.order_by("-seq")[:51].explain()
    condition = next(line for line in plan.splitlines() if "Index Cond" in line and "key_name" in line)
    assert condition.index("'%588721%'") < condition.index("'%KEY%'") < condition.index("'%KEY-588721%'"), plan
    assert [e.key_name for e in search] == ["key-588721"]


def test_own_actions_are_every_audit_action():
    """The list the screen hides and the partial index (audit 0008) leaves out must be every "audit.*"
    action: a new one missing from it would show on the default page."""
    assert sorted(OWN_ACTIONS) == sorted(a for a in AuditEvent.Action.values if a.startswith("audit."))


@pytest.mark.postgres
def test_the_newest_page_reads_past_the_logs_own_events_by_index(auclient, requester):
    """Views of the log recorded since the last other event are not walked through: the default
    page's query is served by the partial index without them (audit 0008), and so is "Older"."""
    real = [event(actor=requester, key_name=f"real {i}").seq for i in range(3)]
    for _ in range(300):
        newest = event(action="audit.viewed").seq
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE keys_auditevent")
        cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is cheaper read whole
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        for data in ({}, {"before": newest}):
            query = filtered(data).filter(**({"seq__lt": data["before"]} if data else {})).order_by("-seq")[:51]
            plan = query.explain()
            assert "audit_seq_not_own" in plan, plan
    assert seqs(auclient.get("/audit/")) == real[::-1]


def test_the_migrations_match_the_models(db):
    """Every index the models name (the partial one above among them) is in a migration."""
    call_command("makemigrations", "--check", "--dry-run", stdout=io.StringIO())


def test_the_trigram_migration_leaves_sqlite_alone(db):
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, "keys_auditevent")
    assert ("audit_key_name_trgm" in indexes) == (connection.vendor == "postgresql")
    assert ("audit_api_key_id_trgm" in indexes) == (connection.vendor == "postgresql")
