"""Single sign-on in Chromium: the provider's login page, back in the portal, minting, and a
fresh sign-in when the old one is too old."""

from __future__ import annotations

import threading
import time

import pytest

from portal.accounts.signals import SIGNED_IN_AT
from portal.audit.models import AuditEvent
from tests.accounts.helpers import ALICE, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, alice


@pytest.mark.browser
def test_browser_sign_in_with_the_provider_and_mint(oidc, live_server, standin, canary, settings):
    """Sign in with ... → the provider's login page → back in the portal, signed in, mint a key.
    Then the sign-in grows too old, and a mint posted without JavaScript goes through the
    provider's login page again (under the CSP, whose form-action allows the provider) and back.

    Playwright runs in a thread of its own: tests/browser/ keeps a session-wide Playwright
    open in the main thread, and its sync API allows one per thread."""
    from playwright.sync_api import expect, sync_playwright

    settings.SECURE_CSP = {**settings.SECURE_CSP, "form-action": [*settings.SECURE_CSP["form-action"], oidc.issuer]}
    outcome: dict = {}
    signed_in, aged = threading.Event(), threading.Event()

    def provider_sign_in(page) -> None:
        page.wait_for_url(oidc.issuer + "/**")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(ALICE["password"])
        page.get_by_role("button", name="Continue").click()

    def drive() -> None:
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(base_url=live_server.url)
                    page.set_default_timeout(TIMEOUT_MS)
                    page.goto("/keys/new/")
                    page.get_by_role("link", name="Sign in with Test IdP").click()
                    provider_sign_in(page)
                    page.wait_for_url(live_server.url + "/keys/new/")
                    expect(page.get_by_text("Signed in as alice@example.com")).to_be_visible()
                    page.get_by_label("Name", exact=True).fill("alice-laptop")
                    page.get_by_label("Monthly limit (USD)").fill("20")
                    page.get_by_role("button", name="Create key", exact=True).click()
                    expect(page.locator("[data-secret-panel]")).to_be_visible()
                    outcome["panel"] = page.locator("[data-secret-panel]").inner_text()

                    page.goto("/keys/new/")
                    signed_in.set()
                    assert aged.wait(10)
                    page.get_by_label("Name", exact=True).fill("alice-desktop")
                    page.evaluate("document.querySelector('form[method=post] [name=nonce]').form.submit()")
                    provider_sign_in(page)  # prompt=login: the provider asks again
                    page.wait_for_url(live_server.url + "/keys/new/")
                    expect(page.get_by_label("Name", exact=True)).to_be_visible()
                    outcome["url"] = page.url
                finally:
                    browser.close()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc
            signed_in.set()

    worker = threading.Thread(target=drive, name="playwright-oidc")
    worker.start()
    signed_in.wait(30)
    if "error" not in outcome:
        _age_all_sessions(13 * 3600)
    aged.set()
    worker.join(60)
    assert not worker.is_alive(), "the browser flow did not finish within 60 s"
    if "error" in outcome:
        raise outcome["error"]
    assert canary in outcome["panel"]
    user = alice()
    assert list(user.issued_keys.values_list("name", flat=True)) == ["alice-laptop"]  # the stale post minted nothing
    actions = [e.action for e in AuditEvent.objects.order_by("seq")]
    assert actions == [
        "auth.signed_in",
        "mint.requested",
        "mint.issued",
        "key.expiry_set",
        "key.labelled",
        "auth.signed_in",
    ]


def _age_all_sessions(seconds: int) -> None:
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    for key in Session.objects.values_list("session_key", flat=True):
        session = SessionStore(session_key=key)
        if SIGNED_IN_AT in session:
            session[SIGNED_IN_AT] = time.time() - seconds
            session.save()
