"""The "Expires" choice of the key forms (create and extend): presets, a date, or "Never" where the
policy allows it, turned into one moment (or None for never). Links and onboarding templates preset
it, clamped to the policy like the limit (keys/onboarding.py).

A preset counts from now; a date means 00:00 UTC on that day. The policy's maximum lifetime is
checked against the resulting moment (policy.lifetime_problem), here for the form's message and
again under the owner's lock when minting or extending.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.utils import timezone

from . import policy

PRESET_DAYS = (30, 90, 180, 365)
DEFAULT_DAYS = 90
DATE, NEVER = "date", "never"


def choices(pol: policy.Policy) -> list[tuple[str, str]]:
    """What the select offers this person: presets within the maximum, a date, and "Never" when
    the policy has no maximum."""
    limit = pol.max_key_days
    options = [(str(d), f"in {d} days") for d in PRESET_DAYS if limit is None or d <= limit]
    options.append((DATE, "on a date"))
    if limit is None:
        options.append((NEVER, "never"))
    return options


def default_days(pol: policy.Policy) -> int:
    return DEFAULT_DAYS if pol.max_key_days is None else min(DEFAULT_DAYS, pol.max_key_days)


def initial_for(days: int | None, today: date) -> dict[str, str]:
    """The form's values for a lifetime of `days` from today (None: never)."""
    if days is None:
        return {"expires": NEVER, "expires_on": ""}
    if days in PRESET_DAYS:
        return {"expires": str(days), "expires_on": ""}
    return {"expires": DATE, "expires_on": (today + timedelta(days=days)).isoformat()}


def clamp(pol: policy.Policy, wanted: int | None) -> tuple[int | None, str]:
    """A lifetime from a link or template, clamped to the policy: (days, note or "")."""
    limit = pol.max_key_days
    if limit is None or (wanted is not None and wanted <= limit):
        return wanted, ""
    asked = "no expiry" if wanted is None else f"a {wanted}-day lifetime"
    return limit, f"The link asked for {asked}; your policy allows at most {limit} days, so that is filled in."


def parse(choice: str, on: str, now: datetime | None = None) -> datetime | None:
    """The moment a submitted choice means (None: never). Raises ValidationError for what no
    option could have sent; whether the policy allows it is policy.lifetime_problem's question."""
    now = now or timezone.now()
    choice = (choice or "").strip()
    if choice == NEVER:
        return None
    if choice == DATE:
        try:
            day = date.fromisoformat((on or "").strip())
        except ValueError:
            raise forms.ValidationError("Enter the expiry date as YYYY-MM-DD, for example 2026-12-31.") from None
        if day <= now.date():
            raise forms.ValidationError("Choose an expiry date after today.")
        return datetime.combine(day, time(0), tzinfo=UTC)
    if choice.isdigit() and int(choice) in PRESET_DAYS:
        return now + timedelta(days=int(choice))
    raise forms.ValidationError("Choose when the key expires.")


class ExpiresFields(forms.Form):
    """The two fields, mixed into the create and extend forms. `expires_at_value()` gives the
    moment; the caller records a policy refusal as a denial (audited)."""

    expires = forms.CharField(label="Expires", required=False, max_length=10)
    expires_on = forms.CharField(label="Expiry date", required=False, max_length=20)

    def expiry_choices(self) -> list[tuple[str, str]]:
        return choices(self.policy)

    def expires_at_value(self, *, default_when_empty: bool) -> datetime | None:
        """Parse the choice, adding a field error (and returning None) when it is unusable. An
        empty choice means the default lifetime where the caller allows it (the create form: old
        links and scripts), else it is an error."""
        choice, on = self.data.get("expires", ""), self.data.get("expires_on", "")
        if not choice and default_when_empty:
            choice, on = initial_for(default_days(self.policy), timezone.now().date()).values()
        try:
            return parse(choice, on)
        except forms.ValidationError as exc:
            self.add_error("expires_on" if choice == DATE else "expires", exc)
            return None
