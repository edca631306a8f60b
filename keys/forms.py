"""The keys app's forms. The key request form validates, normalises, and separates mistakes from
policy refusals: a mistake (empty name, "12,50") is a field error; a value the user's role may not
choose (a forged `manage=write`, a limit over the cap) is a *denial*: also a field error, but the
view audits it.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from decimal import Decimal

from django import forms
from django.conf import settings
from django.core import signing
from django.utils import timezone

from . import policy
from .expiry_fields import ExpiresFields
from .lifecycle import PENDING_LIMIT_MESSAGE
from .models import REASON_MAX_LENGTH

_AMOUNT = re.compile(r"\d{1,10}(\.\d{1,2})?")
_NONCE_SALT = "keys.mint-form-nonce"


def parse_amount(raw: str) -> Decimal:
    """A plain decimal with at most 2 places; every other spelling gets a message a person can act on."""
    text = raw.strip()
    if not text:
        raise forms.ValidationError("Enter a monthly limit in US dollars, for example 25 or 12.50.")
    if text.startswith("-"):
        raise forms.ValidationError("The monthly limit cannot be negative.")
    if re.fullmatch(r"\d{1,3}([,_ ]\d{3})+(\.\d*)?", text):
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
    if "[portal:" in name.lower():
        # The portal marks upstream names with "[portal:<reference>]" for reconciliation.
        raise forms.ValidationError("Names cannot contain “[portal:”; the portal adds that marker itself.")
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


def clean_level(data, field: str) -> str:
    """Exactly one of none/read/write; anything else (WRITE, " write", several values) is forged."""
    values = data.getlist(field) if hasattr(data, "getlist") else [data.get(field)]
    if len(values) != 1 or values[0] not in policy.LEVELS:
        raise forms.ValidationError(f"Choose one of: {', '.join(policy.LEVELS)}.", code="forged")
    return values[0]


class KeyValuesForm(forms.Form):
    """What a key is made of: shared by the mint form and the approval request form."""

    # Not `required`: the clean_* methods give more useful messages for empty values.
    name = forms.CharField(label="Name", max_length=200, strip=False, required=False)
    monthly_limit = forms.CharField(label="Monthly limit (USD)", max_length=40, required=False)
    manage = forms.CharField(label="Manage permission", required=False)
    completions = forms.CharField(label="Completions permission", required=False)

    def __init__(self, *args, user, resolved: tuple | None = None, **kwargs):
        """`resolved`: the (policy, headroom) pair if the caller already computed it."""
        super().__init__(*args, **kwargs)
        self.user = user
        if resolved is None:
            self.policy = policy.resolve(user)
            self.headroom = policy.headroom(user, self.policy)
        else:
            self.policy, self.headroom = resolved
        self.denials: list[str] = []  # forged or never-allowed values: audited as denied
        self.beyond: list[str] = []  # allowed only with an admin's approval

    def clean_name(self) -> str:
        return clean_name(self.cleaned_data["name"])

    def clean_monthly_limit(self) -> Decimal:
        amount = parse_amount(self.cleaned_data["monthly_limit"])
        if amount < self.policy.min_limit:
            raise forms.ValidationError("The monthly limit must be more than 0.")
        return amount

    def clean_manage(self) -> str:
        try:
            value = clean_level(self.data, "manage")
        except forms.ValidationError:
            if self.policy.is_admin:
                raise
            value = None
        if value is None or (value != "none" and not self.policy.is_admin and not self.policy.manage_requestable):
            # From a non-admin, anything but exactly "none" is forged unless their policy lets them ask.
            message = "Only “none” is available for the manage permission."
            self.denials.append(f"manage: {message}")
            raise forms.ValidationError(message)
        return value

    def clean_completions(self) -> str:
        try:
            return clean_level(self.data, "completions")
        except forms.ValidationError as exc:  # only a forged request sends anything else
            self.denials.append(f"completions: {exc.messages[0]}")
            raise


class KeyRequestForm(ExpiresFields, KeyValuesForm):
    nonce = forms.CharField(widget=forms.HiddenInput)
    approval = forms.IntegerField(widget=forms.HiddenInput, required=False)
    template = forms.SlugField(widget=forms.HiddenInput, required=False)

    def clean_nonce(self) -> str:
        nonce = read_nonce(self.cleaned_data["nonce"], self.user)
        if nonce is None:
            raise forms.ValidationError("This form has expired. Reload the page and submit it again.")
        return nonce

    def clean(self):
        data = super().clean()
        expires_at = self.expires_at_value(default_when_empty=True)
        if not self.has_error("expires") and not self.has_error("expires_on"):
            if problem := policy.lifetime_problem(self.policy, expires_at, timezone.now()):
                self.denials.append(f"expires: {problem}")  # never offered: audited as denied
                self.add_error("expires", problem)
            else:
                data["expires_at"] = expires_at
        if self.errors or data.get("approval"):
            return data  # an approved request is checked against its approval when minting
        self.beyond = policy.violations(self.user, data, self.policy, self.headroom)
        if self.beyond:
            if data["manage"] != "none" and not self.policy.manage_requestable:
                self.denials.extend(self.beyond)
            raise forms.ValidationError(self.beyond, code="beyond_policy")
        return data

    @property
    def can_ask_for_approval(self) -> bool:
        return bool(self.beyond) and not self.denials and not self.policy.is_admin

    def requested_values(self) -> dict:
        return {k: self.cleaned_data.get(k) for k in ("name", "monthly_limit", "manage", "completions")}


class ReasonForm(forms.Form):
    """Why someone asks an admin for more: shared by every kind of approval request."""

    reason = forms.CharField(
        label="Why do you need this?", max_length=REASON_MAX_LENGTH, required=False, widget=forms.Textarea
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if len(reason) < 10:
            raise forms.ValidationError("Tell the admins in a sentence why you need this (at least 10 characters).")
        return reason


class ApprovalRequestForm(KeyValuesForm, ReasonForm):
    template = forms.SlugField(required=False)

    def clean(self):
        data = super().clean()
        if self.denials:
            raise forms.ValidationError("This request asks for values the portal does not offer; nothing was sent.")
        if not self.errors and not policy.violations(self.user, data, self.policy, self.headroom):
            raise forms.ValidationError("These values are within your policy: you can create the key yourself.")
        return data


class LimitForm(forms.Form):
    """A new monthly limit for an existing key: the same rules as minting. These checks give the
    early, friendly message; the authoritative ones run under the owner's lock in
    `lifecycle.change_limit`."""

    monthly_limit = forms.CharField(label="Monthly limit (USD)", max_length=40, required=False)

    def __init__(self, *args, key, user, approved: bool = False, **kwargs):
        """`approved`: an admin approved exactly this limit (checked again when it is applied)."""
        kwargs.setdefault("initial", {"monthly_limit": key.monthly_limit})
        super().__init__(*args, **kwargs)
        self.key, self.user, self.approved = key, user, approved
        self.denials: list[str] = []
        self.beyond: Decimal | None = None  # a raise beyond the policy: an admin may approve it
        self.policy = policy.resolve(user)
        self.max_limit = self.policy.max_key_limit

    def clean_monthly_limit(self) -> Decimal:
        if self.key.status != "active":
            raise forms.ValidationError("This key is no longer active, so its limit cannot change.")
        if self.key.pending_limit is not None:
            raise forms.ValidationError(PENDING_LIMIT_MESSAGE.format(pending=policy.money(self.key.pending_limit)))
        amount = parse_amount(self.cleaned_data["monthly_limit"])
        if amount < self.policy.min_limit:
            raise forms.ValidationError("The monthly limit must be more than 0.")
        if self.approved or amount <= self.key.monthly_limit:  # lowering is always allowed
            return amount
        if self.max_limit is not None and amount > self.max_limit:
            message = f"Your policy allows at most {policy.money(self.max_limit)} per key."
            self.denials.append(f"monthly_limit: {message}")
            self.beyond = amount
            raise forms.ValidationError(message)
        if self.policy.max_total_limit is not None:
            room = policy.headroom(self.user, self.policy)
            if message := policy.limit_raise_problem(room, self.policy, self.key, amount):
                self.denials.append(f"monthly_limit: {message}")
                self.beyond = amount
                raise forms.ValidationError(message)
        return amount


class DecisionForm(forms.Form):
    """An admin's decision on an approval request."""

    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    comment = forms.CharField(
        label="Comment (sent to the requester)", required=False, max_length=1000, widget=forms.Textarea
    )


_MAX_ID = 2**63 - 1  # BigAutoField: larger values would overflow the database's integer


class KeyPageForm(forms.Form):
    """The key list's query string (keys/listing.py). Only the cursors can be malformed (by hand):
    that answers 400."""

    owner = forms.CharField(required=False, max_length=150)
    status = forms.CharField(required=False, max_length=20)
    before = forms.IntegerField(required=False, min_value=1, max_value=_MAX_ID)
    after = forms.IntegerField(required=False, min_value=1, max_value=_MAX_ID)
    last = forms.BooleanField(required=False)
    new = forms.IntegerField(required=False, min_value=1, max_value=_MAX_ID)  # the key just created: highlighted

    def clean(self):
        data = super().clean()
        if sum(bool(data.get(k)) for k in ("before", "after", "last")) > 1:
            raise forms.ValidationError("Use one of before, after or last.")
        return data


class LimitApprovalForm(ReasonForm):
    """Asking an admin for a higher limit on an existing key than the policy allows."""

    monthly_limit = forms.CharField(required=False, max_length=40)

    def clean_monthly_limit(self) -> Decimal:
        return parse_amount(self.cleaned_data["monthly_limit"])
