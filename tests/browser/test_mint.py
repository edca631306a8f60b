"""Sign in, mint, copy, see the secret gone (threat 3, invariant I1), with the keyboard only, without
JavaScript, and under the strict CSP."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from keys.models import IssuedKey
from standin import Fault
from tests.browser.conftest import HOME, ON_FORM, TIMEOUT_MS, URL
from tests.browser.helpers import (
    browser_storage,
    create_button,
    fill_form,
    focus_outline,
    mark_document,
    mint,
    same_document,
    secret_panel,
    sign_in,
    tab_to,
)
from tests.keys.helpers import creates

pytestmark = pytest.mark.browser
MY_KEYS_NEW = re.compile(r"/keys/\?new=\d+$")


def test_sign_in_mint_and_copy(page, requester, standin, canary):
    sign_in(page)
    mint(page, name="rita-laptop", limit="25", completions="read")

    panel = secret_panel(page)
    expect(page).to_have_url(ON_FORM)
    expect(page.locator("#secret-value")).to_have_text(canary)
    expect(panel).to_contain_text("only time it is shown")
    (key_id,) = standin.keys
    shown_id = panel.locator("dt", has_text="Key id").locator("xpath=following-sibling::dd[1]")
    expect(shown_id).to_have_text(key_id)
    (call,) = creates(standin)
    assert call.body["permissions"] == {"manage": "none", "completions": "read"}
    assert call.body["monthly_limit"] == 25

    panel.get_by_role("button", name="Copy to clipboard").click()
    expect(panel.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == canary


def test_secret_is_gone_after_back_and_reload(page, requester, standin, canary):
    sign_in(page)
    mint(page)
    assert canary in page.content()
    assert canary not in browser_storage(page)  # nothing written while it is shown, either

    page.get_by_role("link", name="Requesty key portal").click()
    expect(page).to_have_url(HOME)
    assert canary not in page.content()
    page.go_back(wait_until="commit")  # a back/forward-cache restore fires no "load"
    expect(page).to_have_url(ON_FORM)
    expect(page.locator("#mint")).to_be_attached()
    assert canary not in page.content()
    page.reload()
    expect(page.get_by_label("Name", exact=True)).to_be_visible()  # a fresh form, not the panel
    assert canary not in page.content()

    assert canary not in browser_storage(page)
    history = page.evaluate("() => localStorage.getItem('htmx-history-cache')")
    assert history is None or canary not in history
    assert len(creates(standin)) == 1  # going back re-submitted nothing


def test_ive_stored_it_removes_the_secret(page, requester, standin, canary):
    sign_in(page)
    mint(page)

    page.get_by_role("button", name="I've stored it").click()
    expect(page).to_have_url(MY_KEYS_NEW)  # My keys, with the new key marked
    notice = page.get_by_role("status").filter(has_text="Your new key “laptop” is marked “new” below")
    expect(notice).to_be_focused()
    expect(page.locator("tr.new-key", has_text="laptop")).to_contain_text("new")
    assert canary not in page.content()
    page.go_back(wait_until="commit")  # the secret stays gone from the back/forward cache too
    expect(page).to_have_url(ON_FORM)
    assert canary not in page.content()
    assert len(creates(standin)) == 1


def test_keyboard_only_sign_in_and_mint(page, requester, standin, canary):
    page.goto("/accounts/login/")
    expect(page.get_by_label("Username")).to_be_focused()  # autofocus
    page.keyboard.type("rita")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("pw-rita")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Signed in as rita")).to_be_visible()

    tab_to(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Create a key"))
    assert focus_outline(page) != "none"
    page.keyboard.press("Enter")
    expect(page).to_have_url(ON_FORM)

    name = page.get_by_label("Name", exact=True)
    tab_to(page, name)
    assert focus_outline(page) != "none", "a focused input must show a visible focus indicator"
    page.keyboard.type("kbd-only")
    page.keyboard.press("Tab")
    limit = page.get_by_label("Monthly limit (USD)")
    expect(limit).to_be_focused()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("7.50")
    tab_to(page, page.get_by_label("Completions permission"), presses=3)
    page.keyboard.type("r")  # type-ahead picks "read"
    expect(page.get_by_label("Completions permission")).to_have_value("read")
    page.keyboard.press("Tab")
    expires = page.get_by_label("Expires", exact=True)
    expect(expires).to_be_focused()
    assert focus_outline(page) != "none"
    page.keyboard.type("in 3")  # type-ahead picks "in 30 days"
    expect(expires).to_have_value("30")
    tab_to(page, create_button(page), presses=6)  # past the date field (its parts are tab stops)
    expect(create_button(page)).to_be_focused()
    assert focus_outline(page) != "none"
    mark_document(page)
    page.keyboard.press("Enter")

    panel = secret_panel(page)
    expect(panel).to_be_visible()
    expect(panel).to_be_focused()  # keyboard and screen-reader users land on the new secret
    assert same_document(page)
    expect(page.locator("#secret-value")).to_have_text(canary)
    (call,) = creates(standin)
    assert call.body["monthly_limit"] == 7.5
    assert call.body["permissions"]["completions"] == "read"
    key = IssuedKey.objects.get(name="kbd-only")
    assert timedelta(days=29, hours=23) < key.expires_at - key.created_at <= timedelta(days=30)

    page.keyboard.press("Tab")
    expect(panel.get_by_role("button", name="Copy to clipboard")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == canary

    tab_to(page, panel.get_by_role("button", name="I've stored it"), presses=5)
    page.keyboard.press("Enter")
    expect(page).to_have_url(MY_KEYS_NEW)
    assert canary not in page.content()
    page.keyboard.press("Tab")
    assert focus_outline(page) != "none"
    assert len(creates(standin)) == 1


def test_validation_error_through_htmx(page, requester, standin):
    sign_in(page)
    page.goto(URL)
    fill_form(page, name="bad-limit", limit="1e2")
    mark_document(page)
    create_button(page).click()

    alert = page.get_by_role("alert").filter(has_text="plain digits")
    expect(alert).to_be_visible()
    assert same_document(page)
    expect(page.get_by_label("Name", exact=True)).to_have_value("bad-limit")
    expect(page.get_by_label("Monthly limit (USD)")).to_have_value("1e2")
    expect(page.get_by_label("Monthly limit (USD)")).to_have_attribute("aria-invalid", "true")
    expect(create_button(page)).to_be_enabled()
    assert creates(standin) == []


def test_form_works_without_javascript(browser, live_server, requester, standin, canary):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        sign_in(page)
        page.goto(URL)
        fill_form(page, name="no-js", limit="12.34", completions="write")
        with page.expect_navigation():
            create_button(page).click()
        expect(page).to_have_url(ON_FORM)
        expect(secret_panel(page)).to_be_visible()
        expect(page.locator("#secret-value")).to_have_text(canary)
        (call,) = creates(standin)
        assert call.body["name"].startswith("no-js [portal:")

        # Without JavaScript "I've stored it" is a plain GET of My keys.
        with page.expect_navigation():
            page.get_by_role("button", name="I've stored it").click()
        expect(page).to_have_url(MY_KEYS_NEW)
        assert canary not in page.content()

        # Back to the POST that showed the secret: no-store means the browser kept no copy to show
        # (Chromium offers to resubmit instead), and nothing was submitted again.
        try:
            page.go_back()
        except PlaywrightError as exc:
            assert "ERR_CACHE_MISS" in str(exc)
            page.wait_for_url("chrome-error://**")
        assert canary not in page.content()
        assert len(creates(standin)) == 1
    finally:
        context.close()


def test_no_csp_violations_during_a_mint(page, requester, standin, canary):
    messages: list[str] = []

    def on_console(msg) -> None:
        if not msg.location.get("url", "").endswith("/favicon.ico"):  # the portal has no favicon
            messages.append(f"{msg.type}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: messages.append(f"pageerror: {exc}"))
    page.add_init_script(
        "window.__csp = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    sign_in(page)
    response = page.goto(URL)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp

    fill_form(page)
    mark_document(page)
    create_button(page).click()
    expect(page.locator("#secret-value")).to_have_text(canary)
    assert same_document(page)  # htmx did the swap under the strict policy
    secret_panel(page).get_by_role("button", name="Copy to clipboard").click()
    expect(secret_panel(page).get_by_role("status")).to_have_text("Copied to the clipboard.")
    page.get_by_role("button", name="I've stored it").click()
    expect(page).to_have_url(MY_KEYS_NEW)

    assert page.evaluate("window.__csp") == []
    violations = [m for m in messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert violations == []
    assert [m for m in messages if m.startswith(("error:", "pageerror:"))] == []


def test_button_is_disabled_while_in_flight(page, requester, standin, canary):
    sign_in(page)
    page.goto(URL)
    fill_form(page)
    standin.inject(Fault.delay(1.0), method="POST", path="/v1/manage/apikey")
    button = create_button(page)
    mark_document(page)
    button.click()

    expect(button).to_be_disabled(timeout=800)  # well before the 1 s upstream delay ends
    assert secret_panel(page).count() == 0
    button.click(force=True, no_wait_after=True)  # a second click on the disabled button
    page.get_by_label("Name", exact=True).press("Enter")  # and an implicit submit from a field

    expect(page.locator("#secret-value")).to_have_text(canary, timeout=TIMEOUT_MS)
    assert same_document(page)
    page.wait_for_load_state("networkidle")  # any queued second request would have landed by now
    expect(page.locator("#secret-value")).to_have_text(canary)  # not replaced by "already submitted"
    assert len(creates(standin)) == 1


def test_leaving_the_page_wipes_the_secret(page, requester, standin, canary):
    """The `pagehide` handler is what protects the secret when a browser keeps the page in its
    back/forward cache despite `no-store`; Chromium here does not, so fire the event directly."""
    sign_in(page)
    mint(page)
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}))")
    expect(secret_panel(page)).to_have_count(0)
    assert canary not in page.content()
    expect(page.get_by_role("status").filter(has_text="The key was removed from this page")).to_be_visible()
