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

from portal.inputs import parse_id

from . import policy
from .models import REASON_MAX_LENGTH

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


def from_link(raw, pol: policy.Policy, today: date) -> tuple[dict[str, str] | None, str]:
    """A link's or template's lifetime (`expires=<days>` or `never`), clamped: (form values, note)."""
    text = str(raw).strip().lower()
    days = None if text == NEVER else parse_id(text)  # plain ASCII digits only ("²" is not a number)
    if text != NEVER and (days is None or days > 3650):
        return None, "The expiry in the link was not usable; the default is shown."
    days, note = clamp(pol, days)
    return initial_for(days, today), note


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
    if (days := parse_id(choice)) in PRESET_DAYS:
        return now + timedelta(days=days)
    raise forms.ValidationError("Choose when the key expires.")


class ExpiresFields(forms.Form):
    """The two fields, mixed into the create and extend forms. `expires_at_value()` gives the
    moment; the caller records a policy refusal as a denial (audited)."""

    expires = forms.CharField(label="Expires", required=False, max_length=10)
    expires_on = forms.CharField(label="Expiry date", required=False, max_length=20)

    def expiry_choices(self) -> list[tuple[str, str]]:
        return choices(self.policy)

    def expiry_date_range(self) -> tuple[date, date | None]:
        """The earliest and latest date the date field offers (None: no latest)."""
        today = timezone.now().date()
        limit = self.policy.max_key_days
        return today + timedelta(days=1), None if limit is None else today + timedelta(days=limit)

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


class ExtendForm(ExpiresFields):
    """A later expiry for an existing key. `beyond`: the policy's reason when the choice needs an
    admin's approval (the authoritative check runs in expiry.extend, under the owner's lock)."""

    reason = forms.CharField(
        label="Why do you need this?", max_length=REASON_MAX_LENGTH, required=False, widget=forms.Textarea
    )

    def __init__(self, *args, key, user, asking: bool = False, **kwargs):
        kwargs.setdefault("initial", initial_for(default_days(policy.resolve(user)), timezone.now().date()))
        super().__init__(*args, **kwargs)
        self.key, self.user, self.asking = key, user, asking
        self.policy = policy.resolve(user)
        self.beyond = ""

    def clean(self):
        data = super().clean()
        expires_at = self.expires_at_value(default_when_empty=False)
        if self.has_error("expires") or self.has_error("expires_on"):
            return data
        data["expires_at"] = expires_at
        self.beyond = policy.lifetime_problem(self.policy, expires_at, timezone.now())
        if self.asking:
            if not self.beyond:
                raise forms.ValidationError("That expiry is within your policy: you can extend the key yourself.")
            if len(data.get("reason", "").strip()) < 10:
                self.add_error("reason", "Tell the admins in a sentence why you need this (at least 10 characters).")
        return data
