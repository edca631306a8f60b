"""An admin reviews the audit log (issue 3): filters it, pages it by keyboard, opens a key's history,
exports what is shown, and hostile key names stay text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import focus_outline, mark_document, same_document, sign_in

pytestmark = pytest.mark.browser


def test_admin_filters_the_audit_log_opens_a_key_and_exports_csv(page, requester, requester2, superuser, standin):
    from keys.models import Issuance
    from portal.audit import chain

    key_id = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    issuance = Issuance.objects.create(
        nonce="n1", actor=requester, name="ritas-key", monthly_limit=5, manage="none", completions="write"
    )
    chain.record("mint.requested", "pending", issuance=issuance)
    Issuance.objects.filter(pk=issuance.pk).update(state="issued", api_key_id=key_id)
    issuance.refresh_from_db()
    chain.record("mint.issued", "success", issuance=issuance, upstream_status=201)
    chain.record("mint.denied", "denied", actor=requester2, key_name="robs-key")

    sign_in(page, "sam", "pw-sam")
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("cell", name="robs-key")).to_be_visible()
    mark_document(page)
    page.get_by_label("Actor (username)").fill("rita")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(re.compile(r"/audit/\?.*actor=rita"))  # shareable, bookmarkable
    expect(page.get_by_text("robs-key")).to_have_count(0)
    assert same_document(page)  # filtered through htmx, no full reload
    time_cell = page.locator("time[data-local]").first
    expect(time_cell).to_have_attribute("title", re.compile("your time"))

    page.get_by_role("link", name=key_id).first.click()
    expect(page.get_by_role("heading", name="Key history")).to_be_visible()
    expect(page.locator("ol.timeline li")).to_have_count(2)  # requested, then issued

    page.go_back(wait_until="commit")  # the back button returns to the filtered view
    expect(page).to_have_url(re.compile(r"actor=rita"))
    expect(page.get_by_label("Actor (username)")).to_have_value("rita")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    rows = Path(download.value.path()).read_text().splitlines()
    assert rows[0].startswith("seq,time_utc,actor_username")
    assert all(",rita," in row for row in rows[1:]) and len(rows) == 3


def test_audit_log_announces_filter_and_page_changes_and_keeps_focus(page, requester, requester2, superuser, standin):
    from portal.audit import chain
    from portal.audit.views import PAGE_SIZE

    for i in range(PAGE_SIZE + 5):
        chain.record("mint.denied", "denied", actor=requester, key_name=f"rita-{i}")
    chain.record("mint.denied", "denied", actor=requester2, key_name="robs-key")

    sign_in(page, "sam", "pw-sam")
    page.goto("/audit/")
    status = page.get_by_role("status")
    expect(status).to_have_count(1)
    expect(status).to_have_text(re.compile(r"^Showing the 50 newest events"))
    live_region = status.element_handle()  # the same node must carry every update, or nothing is announced
    mark_document(page)

    page.get_by_label("Actor (username)").fill("rob")
    page.get_by_role("button", name="Apply filters").click()
    expect(status).to_have_text("Showing 1 matching event.")
    assert same_document(page)
    assert page.evaluate("el => el.isConnected && el.id === 'audit-status'", live_region)

    page.get_by_label("Actor (username)").fill("rita")
    page.get_by_label("Actor (username)").press("Enter")
    expect(status).to_have_text(re.compile(r"^Showing the 50 newest matching events"))
    # Page with the keyboard: the activated link is swapped away with the old results.
    older = page.get_by_role("link", name="Older ›")
    older.focus()
    page.keyboard.press("Enter")
    expect(status).to_have_text(re.compile(r"^Showing the 5 oldest matching events"))
    assert same_document(page)
    assert page.evaluate("el => el.isConnected", live_region)
    expect(page.get_by_role("heading", name="Events")).to_be_focused()
    assert page.evaluate("() => document.activeElement !== document.body")
    assert focus_outline(page) != "none"  # a keyboard user can see where they are
    page.keyboard.press("Tab")  # and Tab carries on from the results, not from the top of the page
    assert page.evaluate("() => document.getElementById('audit-results').contains(document.activeElement)")


def test_hostile_key_names_stay_inert_in_the_audit_log(page, superuser, requester, standin):
    from portal.audit import chain

    hostile = [
        "<img src=x onerror=alert(1)>",
        '" hx-get="/keys/new/" hx-trigger="load',
        "{{ 7*7 }}",
        "<script>alert(2)</script>",
        "evil\u202egnp.exe",
    ]
    for name in hostile:
        chain.record("mint.denied", "denied", actor=requester, key_name=name, detail=name)
    dialogs, requests = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "sam", "pw-sam")
    page.on("request", lambda r: requests.append(r.url))
    page.goto("/audit/")
    expect(page.get_by_text("<img src=x onerror=alert(1)>", exact=True).first).to_be_visible()
    expect(page.get_by_text("{{ 7*7 }}", exact=True).first).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert dialogs == []  # no script ran
    assert not [u for u in requests if "/keys/new/" in u]  # the hx-get attribute stayed text
    assert not [u for u in requests if u.endswith("/x")]  # the <img src=x> was never fetched
    assert page.evaluate("() => document.querySelectorAll('#audit-results img, #audit-results script').length") == 0
