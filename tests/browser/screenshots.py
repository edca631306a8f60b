"""Screenshots of the main pages for docs/ (issue 13): desktop (1280 px) and phone (390 px).

Not part of the suite (the name does not start with test_); run it explicitly to refresh them:

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/browser/screenshots.py

The stand-in's usage figures are deterministic per key id, so only ids and dates change between runs."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.a11y import DESKTOP, PHONE
from tests.browser.helpers import mint, sign_in

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


def shoot(page, name: str) -> None:
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=DOCS / "screenshots" / f"{name}-{label}.png", full_page=True)
    page.set_viewport_size(DESKTOP)


def test_screenshots(page, requester, standin, canary, settings):
    settings.PORTAL_SANDBOX = True  # the banner people see in `make run`
    (DOCS / "screenshots").mkdir(exist_ok=True)
    sign_in(page)
    mint(page, name="data-pipeline", limit="40", completions="write")
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=DOCS / "screenshot.png", full_page=True)
    shoot(page, "new-key")
    mint(page, name="laptop", limit="25")
    for key_id in standin.keys:
        standin.keys[key_id]["monthly_spend"] = Decimal("3.18")
    page.get_by_role("button", name="I've stored it").click()
    expect(page.locator("progress")).to_have_count(2)
    shoot(page, "my-keys")
    page.get_by_role("link", name="data-pipeline", exact=True).click()
    expect(page.locator("svg.chart")).to_be_visible()
    expect(page.locator("#main progress")).to_be_visible()
    shoot(page, "key-page")
    page.goto("/keys/new/")
    page.get_by_label("Monthly limit (USD)").fill("500")
    page.get_by_label("Name", exact=True).fill("batch")
    page.get_by_role("button", name="Create key", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile("Ask an admin"))).to_be_visible()
    shoot(page, "ask-for-more")
