"""More than the policy allows (issue 5): asked for, approved by an admin, minted, and onboarding
continues where the template says."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import create_button, sign_in, sign_out
from tests.keys.helpers import creates

pytestmark = pytest.mark.browser


def test_approval_then_mint_then_continue_onboarding(page, requester, superuser, standin, canary, settings):

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
    (call,) = creates(standin)
    assert call.body["monthly_limit"] == 400
    page.get_by_role("link", name="Continue onboarding").click()
    expect(page.get_by_role("heading", name="Onboarding step 3")).to_be_visible()
