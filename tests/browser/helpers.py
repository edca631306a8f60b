"""What the browser tests do on a page: sign in and out, fill in and submit the mint form, find the
secret panel, tell an htmx swap from a new document, and move the focus like a keyboard user."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import URL


def sign_in(page: Page, username: str = "rita", password: str = "pw-rita") -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text(f"Signed in as {username}")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Username")).to_be_visible()


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
