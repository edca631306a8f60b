"""Every page and state, signed in as a requester and as an admin (issue 13): no axe-core violation
at 1280 px and at 390 px, no sideways scrolling at 390 px, the CSP untouched; and the key can be
created with the keyboard alone."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from standin import Fault
from tests.browser.a11y import Checker
from tests.browser.conftest import CREATE
from tests.browser.helpers import create_button, fill_form, mint, secret_panel, sign_in, sign_out

pytestmark = pytest.mark.browser


def test_requester_pages_and_states(page, requester, standin, canary):
    check = Checker(page)
    page.goto("/accounts/login/")
    check("sign-in page")
    sign_in(page)
    check("home")
    page.goto("/keys/")
    check("My keys, empty")
    page.goto("/keys/new/")
    check("create form")
    fill_form(page, name="")
    create_button(page).click()
    expect(page.get_by_role("alert").first).to_be_visible()
    check("create form with a validation error")
    fill_form(page, name="big", limit="5000")
    create_button(page).click()
    expect(page.get_by_role("heading", name="Ask an admin for more")).to_be_visible()
    check("refused by the policy, with the approval offer")
    page.get_by_label("Why do you need this?").fill("A batch job.")
    page.get_by_role("button", name="Request approval").click()
    expect(page.get_by_role("status").filter(has_text="sent to the portal admins")).to_be_visible()
    check("approval requested")
    standin.inject(Fault.status(503), method="POST", path=CREATE[1])
    page.goto("/keys/new/")
    fill_form(page, name="down")
    create_button(page).click()
    expect(page.get_by_role("alert").first).to_be_visible()
    check("Requesty unavailable")
    mint(page, name="laptop", limit="40")
    check("the new key's secret")
    page.goto("/keys/")
    expect(page.locator("progress")).to_have_count(1)
    check("My keys with a key and its spend")
    page.locator("tr", has_text="laptop").get_by_role("link", name=re.compile("Revoke")).click()
    expect(page.get_by_text("Revoke “laptop”?")).to_be_visible()
    check("the revoke question in the row")
    page.get_by_role("link", name="laptop", exact=True).click()
    expect(page.locator("svg.chart")).to_be_visible()
    check("key page with its usage")
    page.get_by_label("Monthly limit (USD)").fill("5000")
    page.get_by_role("button", name="Change limit").click()
    expect(page.get_by_role("heading", name="Ask an admin for $5,000.00 a month")).to_be_visible()
    check("key page offering to ask for a higher limit")
    page.get_by_role("link", name=re.compile("^Revoke “laptop”")).click()
    check("revoke page")
    page.goto("/keys/999999/")
    check("404 page")
    page.goto("/approvals/")
    check("403 page")
    check.assert_clean()


def test_admin_pages_and_states(page, requester, superuser, standin, canary, settings):
    from keys.models import ApprovalRequest, OnboardingTemplate

    settings.ONBOARDING_RETURN_HOSTS = ["wiki.example.com"]
    OnboardingTemplate.objects.create(
        slug="data-team", description="Data team laptops", name_pattern="{username}-dev", monthly_limit=Decimal("40")
    )
    OnboardingTemplate.objects.create(
        slug="elsewhere", name_pattern="x", monthly_limit=Decimal("5"), return_url="https://evil.example.net/"
    )
    for name, status in (("pending-one", "pending"), ("decided-one", "denied")):
        ApprovalRequest.objects.create(
            requester=requester,
            name=name,
            monthly_limit=Decimal("400"),
            manage="none",
            completions="write",
            reason="Nightly batch.",
            status=status,
        )
    check = Checker(page)
    sign_in(page)
    mint(page, name="ritas-key", limit="30")
    sign_out(page)
    sign_in(page, "sam", "pw-sam")
    page.goto("/keys/")
    expect(page.locator("progress")).to_have_count(1)
    check("All keys")
    page.get_by_label("Owner (username)").fill("nobody")
    page.get_by_role("button", name="Filter").click()
    check("All keys, filtered to nothing")
    page.goto("/approvals/")
    check("approvals")
    page.goto("/onboarding/")
    check("onboarding links")
    page.goto("/audit/")
    check("audit log")
    page.locator("a", has_text="Details").first.click()
    check("audit event")
    page.goto("/audit/")
    page.locator("td a.muted").first.click()
    check("a key's audit history")
    check.assert_clean()


def test_the_checks_catch_a_violation_and_the_csp_still_refuses_inline_script(page, requester, standin):
    sign_in(page)
    check = Checker(page)
    check("home")
    assert not check.problems
    page.evaluate(
        """() => {
          const img = document.createElement("img"), wide = document.createElement("div");
          img.src = "/static/none.png";
          wide.style.width = "900px";
          wide.textContent = "wide";
          const narrow = document.createElement("p");
          narrow.style.width = "2em";
          narrow.style.wordBreak = "break-all";
          narrow.textContent = "Revoke";
          document.querySelector("main").append(img, wide, narrow);
        }"""
    )
    check("home with an unlabelled image and a wide box")
    assert any("image-alt" in p for p in check.problems) and any("scrolls sideways" in p for p in check.problems)
    assert any("words broken across lines: ['Revoke']" in p for p in check.problems)
    response = page.goto("/")
    assert "script-src" in response.headers["content-security-policy"]
    with pytest.raises(Exception):
        page.add_script_tag(content="window.__inline = 1")
    assert page.evaluate("() => window.__inline") is None


def test_a_key_created_with_the_keyboard_alone(page, requester, standin, canary):
    sign_in(page)
    page.goto("/")
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Enter")
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.textContent.trim()") == "Create a key":
            break
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/keys/new/$"))
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.id")
    while focused != "id_name":
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.id")
    page.keyboard.type("keyboard-key")
    page.keyboard.press("Tab")
    page.keyboard.type("12")
    # Past the permissions and Expires (their defaults stay) to the form's button.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.type === 'submit'"):
            break
    page.keyboard.press("Enter")
    expect(secret_panel(page)).to_be_focused()  # focus moves once htmx has settled the swap
    expect(page.locator("#secret-value")).to_have_text(canary)
