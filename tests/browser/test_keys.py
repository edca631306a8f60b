"""A key's life (issue 4): its spend on "My keys", a lower limit, then revoked in place."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import mint, sign_in

pytestmark = pytest.mark.browser


def test_requester_sees_spend_lowers_the_limit_and_revokes(page, requester, standin, canary):
    sign_in(page)
    mint(page, name="lifecycle", limit="40")
    (key_id,) = standin.keys
    standin.keys[key_id]["monthly_spend"] = __import__("decimal").Decimal("10")

    page.get_by_role("link", name="My keys").first.click()
    row = page.locator("tr", has_text="lifecycle")
    expect(row.locator("progress")).to_have_attribute("value", "25")  # $10 of $40, loaded through htmx
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
