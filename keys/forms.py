"""The key request form: validates, normalises, and separates mistakes from policy refusals.

A mistake (empty name, "12,50") is a field error. A value the user's role may not choose (a forged
`manage=write`, a limit over the cap) is a *denial*: also a field error, but the view audits it.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from decimal import Decimal

from django import forms
from django.conf import settings
from django.core import signing

from . import policy

_AMOUNT = re.compile(r"\d{1,10}(\.\d{1,2})?")
_NONCE_SALT = "keys.mint-form-nonce"


def parse_amount(raw: str) -> Decimal:
    """A plain decimal with at most 2 places; every other spelling gets a message a person can act on."""
    text = raw.strip()
    if not text:
        raise forms.ValidationError("Enter a monthly limit in US dollars, for example 25 or 12.50.")
    if text.startswith("-"):
        raise forms.ValidationError("The monthly limit cannot be negative.")
    if "," in text or "_" in text or " " in text:
        raise forms.ValidationError("Write the amount without thousands separators, for example 1500.")
    if not _AMOUNT.fullmatch(text):
        if re.fullmatch(r"\d+\.\d{3,}", text):
            raise forms.ValidationError("Use at most 2 decimal places (cents).")
        raise forms.ValidationError("Enter the amount as plain digits, for example 25 or 12.50.")
    return Decimal(text)


def clean_name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise forms.ValidationError("Give the key a name, so you can recognise it later.")
    if len(name) > 64:
        raise forms.ValidationError(f"Keep the name to 64 characters or fewer (it has {len(name)}).")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name):
        raise forms.ValidationError("The name contains invisible or control characters; type it again plainly.")
    return name


def new_nonce(user) -> str:
    """A signed one-time token: binds the form to this user and expires. Uniqueness of the
    issuance record's nonce column makes it single-use."""
    return signing.TimestampSigner(salt=_NONCE_SALT).sign(f"{user.pk}:{uuid.uuid4().hex}")


def read_nonce(token: str, user) -> str | None:
    try:
        value = signing.TimestampSigner(salt=_NONCE_SALT).unsign(token, max_age=settings.PORTAL_FORM_MAX_AGE)
    except signing.BadSignature:
        return None
    user_pk, _, nonce = value.partition(":")
    return nonce if user_pk == str(user.pk) and nonce else None


class KeyRequestForm(forms.Form):
    # Not `required`: the clean_* methods give more useful messages for empty values.
    name = forms.CharField(label="Name", max_length=200, strip=False, required=False)
    monthly_limit = forms.CharField(label="Monthly limit (USD)", max_length=40, required=False)
    manage = forms.CharField(label="Manage permission")
    completions = forms.CharField(label="Completions permission")
    nonce = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.denials: list[str] = []
        self.manage_levels = policy.manage_levels(user)
        self.completions_levels = policy.completions_levels(user)
        self.max_limit = policy.max_monthly_limit(user)
        self.min_limit = policy.min_monthly_limit(user)

    def _deny(self, field: str, message: str) -> None:
        self.denials.append(f"{field}: {message}")
        raise forms.ValidationError(message)

    def clean_name(self) -> str:
        return clean_name(self.cleaned_data["name"])

    def clean_monthly_limit(self) -> Decimal:
        amount = parse_amount(self.cleaned_data["monthly_limit"])
        if amount < self.min_limit:
            raise forms.ValidationError("The monthly limit must be more than 0.")
        if self.max_limit is not None and amount > self.max_limit:
            self._deny("monthly_limit", f"Your monthly limit can be at most ${self.max_limit}.")
        return amount

    def clean_manage(self) -> str:
        return self._level("manage", self.manage_levels)

    def clean_completions(self) -> str:
        return self._level("completions", self.completions_levels)

    def _level(self, field: str, allowed: tuple[str, ...]) -> str:
        values = self.data.getlist(field) if hasattr(self.data, "getlist") else [self.data.get(field)]
        value = values[-1] if values else ""
        if len(values) == 1 and value in allowed:
            return value
        if len(values) == 1 and value in policy.LEVELS:
            self._deny(field, f"Your role cannot choose “{value}” for this permission.")
        if field == "manage" and not policy.is_portal_admin(self.user):
            # Anything but exactly "none" from a non-admin is forged: WRITE, " write", lists.
            self._deny(field, "Only “none” is available for the manage permission.")
        raise forms.ValidationError(f"Choose one of: {', '.join(allowed)}.")

    def clean_nonce(self) -> str:
        nonce = read_nonce(self.cleaned_data["nonce"], self.user)
        if nonce is None:
            raise forms.ValidationError("This form has expired. Reload the page and submit it again.")
        return nonce


def prefill(params, user) -> tuple[dict, list[str]]:
    """Initial values from an onboarding link: only name, monthly_limit and completions, each
    validated and clamped to the user's policy. `manage` is never taken from a URL. Returns the
    initial values and a list of notes about what the link changed or could not apply."""
    initial = {
        "name": "",
        "monthly_limit": policy.default_monthly_limit(user),
        "manage": "none",
        "completions": "write",
    }
    notes = []
    if "name" in params:
        try:
            initial["name"] = clean_name(params["name"])
            notes.append("The name was filled in from the link you followed.")
        except forms.ValidationError:
            notes.append("The name in the link was not usable and was left empty.")
    if "monthly_limit" in params:
        try:
            amount = parse_amount(params["monthly_limit"])
            cap, floor = policy.max_monthly_limit(user), policy.min_monthly_limit(user)
            if cap is not None and amount > cap:
                notes.append(f"The link asked for a ${amount} limit; yours is capped at ${cap}.")
                amount = cap
            elif amount < floor:
                raise forms.ValidationError("too low")
            else:
                notes.append("The monthly limit was filled in from the link you followed.")
            initial["monthly_limit"] = amount
        except forms.ValidationError:
            notes.append("The monthly limit in the link was not usable; the default is shown.")
    if params.get("completions") in policy.completions_levels(user):
        initial["completions"] = params["completions"]
        notes.append("The completions permission was filled in from the link you followed.")
    if "manage" in params:
        notes.append("Links cannot set the manage permission; it is “none”.")
    return initial, notes


class LimitForm(forms.Form):
    """A new monthly limit for an existing key: the same rules as minting."""

    monthly_limit = forms.CharField(label="Monthly limit (USD)", max_length=40, required=False)

    def __init__(self, *args, key, user, **kwargs):
        kwargs.setdefault("initial", {"monthly_limit": key.monthly_limit})
        super().__init__(*args, **kwargs)
        self.key, self.user = key, user
        self.denials: list[str] = []
        self.max_limit = policy.max_monthly_limit(user)

    def clean_monthly_limit(self) -> Decimal:
        if self.key.status != "active":
            raise forms.ValidationError("This key is no longer active, so its limit cannot change.")
        amount = parse_amount(self.cleaned_data["monthly_limit"])
        if amount < policy.min_monthly_limit(self.user):
            raise forms.ValidationError("The monthly limit must be more than 0.")
        if self.max_limit is not None and amount > self.max_limit:
            message = f"Your monthly limit can be at most ${self.max_limit}."
            self.denials.append(f"monthly_limit: {message}")
            raise forms.ValidationError(message)
        return amount
