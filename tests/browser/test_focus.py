"""Focus after every htmx swap a person causes (issue 13): the first invalid field, the inline
question, the confirmation, the Requesty error; and a focus ring of at least 3:1 against the page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from standin import Fault
from tests.browser.conftest import CREATE
from tests.browser.helpers import create_button, fill_form, mint, sign_in

pytestmark = pytest.mark.browser

CONTRAST = """() => {
  const rgb = s => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const linear = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = c => { const [r, g, b] = c.map(linear); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ring = lum(rgb(getComputedStyle(document.activeElement).outlineColor));
  const page = lum(rgb(getComputedStyle(document.body).backgroundColor));
  return (Math.max(ring, page) + 0.05) / (Math.min(ring, page) + 0.05);
}"""


def focused(page) -> str:
    return page.evaluate("() => document.activeElement.outerHTML.slice(0, 120)")


def test_focus_lands_on_each_swaps_result(page, requester, standin, canary):
    sign_in(page)
    page.goto("/keys/new/")
    fill_form(page, name="")
    create_button(page).click()
    expect(page.get_by_label("Name", exact=True)).to_be_focused()  # the first invalid field

    fill_form(page, name="big", limit="5000")
    create_button(page).click()
    expect(page.get_by_role("alert").first).to_be_focused()  # the refusal, before the offer below it
    page.get_by_label("Why do you need this?").fill("A batch job.")
    page.get_by_role("button", name="Request approval").click()
    expect(page.get_by_role("status").filter(has_text="sent to the portal admins")).to_be_focused()

    standin.inject(Fault.status(503), method="POST", path=CREATE[1])
    page.goto("/keys/new/")
    fill_form(page, name="down")
    create_button(page).click()
    expect(page.get_by_role("alert").first).to_be_focused()

    mint(page, name="laptop")
    page.goto("/keys/")
    row = page.locator("tr", has_text="laptop")
    row.get_by_role("link", name=re.compile("Revoke")).focus()
    page.keyboard.press("Enter")
    expect(row.locator("p", has_text="Revoke “laptop”?")).to_be_focused()
    page.keyboard.press("Tab")
    expect(row.get_by_role("button", name="Yes, revoke “laptop”")).to_be_focused()  # Tab stays in the row
    page.keyboard.press("Enter")
    expect(page.locator("tr", has_text="laptop").get_by_role("status")).to_be_focused()
    assert "Revoked" in focused(page)


def test_the_focus_ring_has_at_least_3_to_1_contrast(page, requester, standin):
    sign_in(page)
    page.goto("/keys/new/")
    page.get_by_label("Name", exact=True).focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
    assert page.evaluate(CONTRAST) >= 3
