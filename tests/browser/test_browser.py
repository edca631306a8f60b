"""Browser tests: the flows a person does, in the system Chromium driven by Playwright.

Sign in, mint, copy, see the secret gone (threat 3, invariant I1), with the keyboard only, without
JavaScript, and under the strict CSP. The portal runs in pytest-django's live server and talks to
the stand-in Requesty over real HTTP, so everything between the click and the wire is real.

Chromium comes from Debian (`/usr/bin/chromium`), not from Playwright's download: a missing
browser is a failure with instructions, never a skip (CI treats a skipped browser test as a failure).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from standin import Fault

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
URL = "/keys/new/"
CREATE = ("POST", "/v1/manage/apikey")
TIMEOUT_MS = 5_000
HOME = re.compile(r"^http://[^/]+/$")
ON_FORM = re.compile(r"^http://[^/]+/keys/new/$")


# --- Fixtures -------------------------------------------------------------------------------------
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


# --- Helpers --------------------------------------------------------------------------------------
def sign_in(page: Page, username: str = "rita", password: str = "pw-rita") -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text(f"Signed in as {username}")).to_be_visible()


def fill_form(page: Page, name: str = "laptop", limit: str = "25", completions: str = "read") -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Monthly limit (USD)").fill(limit)
    page.get_by_label("Completions permission").select_option(completions)


def create_button(page: Page):
    return page.get_by_role("button", name="Create key", exact=True)


def secret_panel(page: Page):
    return page.locator("[data-secret-panel]")


def mark_document(page: Page) -> None:
    """A marker that survives an htmx swap but not a new document."""
    page.evaluate("window.__marker = 1")


def same_document(page: Page) -> bool:
    return page.evaluate("window.__marker") == 1


def browser_storage(page: Page) -> str:
    """Every key and value in localStorage and sessionStorage, as one string to search."""
    return page.evaluate(
        """() => [localStorage, sessionStorage]
            .flatMap(store => Object.keys(store).map(key => key + "=" + store.getItem(key)))
            .join("\\n")"""
    )


def mint(page: Page, **fields) -> None:
    """From a signed-in session: open the form, fill it in, create the key through htmx."""
    page.goto(URL)
    fill_form(page, **fields)
    mark_document(page)
    create_button(page).click()
    expect(secret_panel(page)).to_be_visible()
    assert same_document(page), "the panel arrived as a new document, not as an htmx swap"


def tab_to(page: Page, locator, presses: int = 25) -> None:
    """Press Tab until `locator` has the focus (a real keyboard user's path), or fail."""
    handle = locator.element_handle()
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("el => document.activeElement === el", handle):
            return
    raise AssertionError(f"Tab never reached {locator}")


def focus_outline(page: Page) -> str:
    return page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")


# --- Tests ----------------------------------------------------------------------------------------
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
    (call,) = standin.calls_to(*CREATE)
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
    assert len(standin.calls_to(*CREATE)) == 1  # going back re-submitted nothing


def test_ive_stored_it_removes_the_secret(page, requester, standin, canary):
    sign_in(page)
    mint(page)

    page.get_by_role("button", name="I've stored it").click()
    expect(secret_panel(page)).to_have_count(0)
    expect(page.get_by_role("status").filter(has_text="The key was removed from this page")).to_be_visible()
    assert canary not in page.content()
    assert same_document(page)  # removed in place, no round trip needed

    again = page.get_by_role("link", name="Create another key")
    expect(again).to_be_focused()  # the next step is one Enter away
    page.keyboard.press("Enter")
    expect(page).to_have_url(ON_FORM)
    expect(create_button(page)).to_be_enabled()
    assert len(standin.calls_to(*CREATE)) == 1


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
    expect(create_button(page)).to_be_focused()
    assert focus_outline(page) != "none"
    mark_document(page)
    page.keyboard.press("Enter")

    panel = secret_panel(page)
    expect(panel).to_be_visible()
    expect(panel).to_be_focused()  # keyboard and screen-reader users land on the new secret
    assert same_document(page)
    expect(page.locator("#secret-value")).to_have_text(canary)
    (call,) = standin.calls_to(*CREATE)
    assert call.body["monthly_limit"] == 7.5
    assert call.body["permissions"]["completions"] == "read"

    page.keyboard.press("Tab")
    expect(panel.get_by_role("button", name="Copy to clipboard")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == canary

    tab_to(page, panel.get_by_role("button", name="I've stored it"), presses=5)
    page.keyboard.press("Enter")
    expect(panel).to_have_count(0)
    assert canary not in page.content()
    again = page.get_by_role("link", name="Create another key")
    expect(again).to_be_focused()
    assert focus_outline(page) != "none"
    page.keyboard.press("Enter")
    expect(page).to_have_url(ON_FORM)
    expect(create_button(page)).to_be_visible()
    assert len(standin.calls_to(*CREATE)) == 1


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
    assert standin.calls_to(*CREATE) == []


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
        (call,) = standin.calls_to(*CREATE)
        assert call.body["name"].startswith("no-js [portal:")

        # Without JavaScript "I've stored it" is a plain GET of a fresh form.
        with page.expect_navigation():
            page.get_by_role("button", name="I've stored it").click()
        expect(create_button(page)).to_be_visible()
        assert canary not in page.content()

        # Back to the POST that showed the secret: no-store means the browser kept no copy to show
        # (Chromium offers to resubmit instead), and nothing was submitted again.
        try:
            page.go_back()
        except PlaywrightError as exc:
            assert "ERR_CACHE_MISS" in str(exc)
            page.wait_for_url("chrome-error://**")
        assert canary not in page.content()
        assert len(standin.calls_to(*CREATE)) == 1
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
    expect(secret_panel(page)).to_have_count(0)

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
    assert len(standin.calls_to(*CREATE)) == 1


def test_leaving_the_page_wipes_the_secret(page, requester, standin, canary):
    """The `pagehide` handler is what protects the secret when a browser keeps the page in its
    back/forward cache despite `no-store`; Chromium here does not, so fire the event directly."""
    sign_in(page)
    mint(page)
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}))")
    expect(secret_panel(page)).to_have_count(0)
    assert canary not in page.content()
    expect(page.get_by_role("status").filter(has_text="The key was removed from this page")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Username")).to_be_visible()


# --- Issue 3: the audit log ------------------------------------------------------------------------
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


# --- Issue 4: a key's life -------------------------------------------------------------------------
def test_requester_sees_spend_lowers_the_limit_and_revokes(page, requester, standin, canary):
    sign_in(page)
    mint(page, name="lifecycle", limit="40")
    (key_id,) = standin.keys
    standin.keys[key_id]["monthly_spend"] = __import__("decimal").Decimal("10")

    page.get_by_role("link", name="My keys").first.click()
    row = page.locator("tr", has_text="lifecycle")
    expect(row.locator("progress")).to_have_attribute("value", "25")  # $10 of $40, loaded through htmx
    expect(row).to_contain_text("$10 of $40.00")
    expect(row).to_contain_text("active")

    row.get_by_role("link", name="lifecycle", exact=True).click()
    expect(page.get_by_text("Daily spend", exact=False).first).to_be_attached()
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


# --- Issue 5: more than the policy allows, approved, then onboarding continues ---------------------
def test_approval_then_mint_then_continue_onboarding(page, requester, superuser, standin, canary, settings):
    from decimal import Decimal

    from keys.models import OnboardingTemplate

    settings.ONBOARDING_RETURN_HOSTS = ["wiki.example.com"]
    OnboardingTemplate.objects.create(
        slug="data-team",
        name_pattern="{username}-dev",
        monthly_limit=Decimal("400"),
        completions="write",
        return_url="https://wiki.example.com/onboarding/step-3",
    )
    page.route(
        "https://wiki.example.com/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<h1>Onboarding step 3</h1>"),
    )

    sign_in(page)
    page.goto("/keys/new/?template=data-team")
    expect(page.get_by_label("Monthly limit (USD)")).to_have_value("100")  # clamped to the policy
    page.get_by_label("Why do you need this?").fill("The data team's nightly batch needs $400.")
    page.get_by_role("button", name="Request approval").click()
    expect(page.get_by_role("status").filter(has_text="sent to the portal admins")).to_be_visible()
    sign_out(page)

    sign_in(page, "sam", "pw-sam")
    page.get_by_role("link", name=re.compile("Approvals")).click()
    expect(page.get_by_text("The data team's nightly batch needs $400.")).to_be_visible()
    page.get_by_role("button", name="Approve “rita-dev”").click()
    expect(page.get_by_text("No pending requests.")).to_be_visible()
    sign_out(page)

    sign_in(page)
    page.get_by_role("link", name="My keys").first.click()
    page.get_by_role("link", name="Create this key").click()
    expect(page.get_by_label("Monthly limit (USD)")).to_have_value("400.00")
    create_button(page).click()
    expect(page.locator("#secret-value")).to_have_text(canary)
    (call,) = standin.calls_to(*CREATE)
    assert call.body["monthly_limit"] == 400
    page.get_by_role("link", name="Continue onboarding").click()
    expect(page.get_by_role("heading", name="Onboarding step 3")).to_be_visible()


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
