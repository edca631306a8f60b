"""Browser tests: the flows a person does, in the system Chromium driven by Playwright.

The portal runs in pytest-django's live server and talks to the stand-in Requesty over real HTTP,
so everything between the click and the wire is real. Here: the browser, one context and page per
test, and the constants the tests share (tests/accounts/test_oidc.py drives Chromium too and takes
CHROMIUM, CHROMIUM_ARGS and TIMEOUT_MS from here).

Chromium comes from Debian (`/usr/bin/chromium`), not from Playwright's download: a missing
browser is a failure with instructions, never a skip (CI treats a skipped browser test as a failure).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
URL = "/keys/new/"
CREATE = ("POST", "/v1/manage/apikey")  # a fault injected here once meets the create, the first call
TIMEOUT_MS = 5_000
HOME = re.compile(r"^http://[^/]+/$")
ON_FORM = re.compile(r"^http://[^/]+/keys/new/$")


@pytest.fixture(scope="session")
def playwright() -> Playwright:
    """Playwright's sync API keeps an asyncio loop marked as running in this thread for as long as
    it lives, so Django's async-safety guard would refuse every ORM call (in fixtures, in the live
    server's shared SQLite connection) until the session ends. Allow it for exactly that span."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Browser tests need Debian's Chromium at {CHROMIUM}: run `apt-get install -y chromium` "
            "(Playwright's own browser download is not used).",
            pytrace=False,
        )
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            yield pw
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Browser:
    # Playwright turns the back/forward cache off by default; real browsers have it on, and it is
    # exactly where a shown secret could survive "Back", so the tests run with it on.
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, ignore_default_args=["--disable-back-forward-cache"]
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser, live_server, standin) -> BrowserContext:
    context = browser.new_context(base_url=live_server.url, permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
