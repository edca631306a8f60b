"""A key's life (issues 4 and 14): its spend on "My keys", a lower limit, revoked in place; extended
and rotated from its page."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import mint, sign_in

pytestmark = pytest.mark.browser


def test_requester_sees_spend_lowers_the_limit_and_revokes(page, requester, standin, canary):
    sign_in(page)
    mint(page, name="lifecycle", limit="40")
    (key_id,) = standin.keys
    standin.fake_usage = False
    standin.record_usage(key_id, datetime.now(UTC).date().isoformat(), Decimal("10"))

    page.get_by_role("link", name="My keys").first.click()
    row = page.locator("tr", has_text="lifecycle")
    expect(row.locator("progress")).to_have_attribute("value", "25")  # $10 of $40, from the organization usage
    expect(row).to_contain_text("$10.00 of $40.00")
    expect(row).to_contain_text("active")

    row.get_by_role("link", name="lifecycle", exact=True).click()
    expect(page.get_by_role("heading", name="Last 30 days")).to_be_visible()
    expect(page.locator("svg.chart rect.bar")).to_have_count(30)
    page.get_by_label("Monthly limit (USD)").fill("15")
    page.get_by_role("button", name="Change limit").click()
    expect(page.get_by_role("status").filter(has_text="now $15")).to_be_visible()
    assert standin.keys[key_id]["monthly_limit"] == 15

    page.get_by_role("link", name="← Keys").click()
    row = page.locator("tr", has_text="lifecycle")
    row.get_by_role("link", name=re.compile("Revoke")).click()
    expect(row).to_contain_text("Revoke “lifecycle”?")
    row.get_by_role("button", name="Yes, revoke “lifecycle”").click()
    row = page.locator("tr", has_text="lifecycle")
    expect(row).to_contain_text("revoked")
    assert key_id not in standin.keys


def test_requester_extends_then_rotates_a_key_and_sees_the_new_secret_once(page, requester, standin, canary):
    sign_in(page)
    mint(page, name="rotating", limit="20")
    (old_id,) = standin.keys
    page.get_by_role("link", name="My keys").first.click()
    page.locator("tr", has_text="rotating").get_by_role("link", name="rotating", exact=True).click()

    page.get_by_label("Expires", exact=True).select_option("90")
    page.get_by_role("button", name="Extend").click()
    expect(page.get_by_role("status").filter(has_text="Requesty confirmed it")).to_be_focused()
    assert standin.keys[old_id]["expires_at"] is not None

    page.get_by_label("This key ends").select_option(label="in 1 hour")
    page.get_by_role("button", name="Rotate “rotating”").click()
    panel = page.locator("[data-secret-panel]")
    expect(panel).to_be_focused()
    expect(page.locator("#secret-value")).to_have_text(canary)
    expect(panel).to_contain_text("keeps working until")
    (new_id,) = set(standin.keys) - {old_id}
    assert standin.keys[old_id]["expires_at"] is not None and standin.keys[new_id]["name"].startswith(
        "rotating [portal:"
    )

    panel.get_by_role("link", name="“rotating”").click()  # the old key's page links to its replacement
    expect(page.locator("dt", has_text="Replaced by")).to_be_visible()
    expect(page.locator("#secret-value")).to_have_count(0)


def test_revoking_from_the_key_page_lands_on_my_keys_with_a_confirmation(page, requester, standin, canary):
    sign_in(page)
    mint(page, name="from-page", limit="10")
    (key_id,) = standin.keys
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto("/keys/")
    page.get_by_role("link", name="from-page", exact=True).click()
    page.get_by_role("link", name=re.compile("^Revoke “from-page”")).click()
    page.get_by_role("button", name="Yes, revoke “from-page”").click()
    expect(page).to_have_url(re.compile(r"/keys/$"))
    expect(page.get_by_role("status").filter(has_text="The key “from-page” is revoked.")).to_be_visible()
    expect(page.locator("tr", has_text="from-page")).to_contain_text("revoked")
    assert key_id not in standin.keys and not errors
