"""Onboarding links: the values they fill into the mint form, and where "Continue onboarding" may
lead after a key is stored."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from . import expiry_fields, policy
from .forms import clean_name, parse_amount
from .models import OnboardingTemplate


def safe_return_url(url: str) -> str | None:
    """The URL if it is HTTPS on a host in ONBOARDING_RETURN_HOSTS, else None.

    Refuses scheme-relative (`//evil.com`), backslash (`/\\evil.com`), `javascript:`, mixed-case,
    percent-encoded and whitespace tricks: only an exact, plain https URL on an allowed host passes."""
    allowed = {h.lower() for h in settings.ONBOARDING_RETURN_HOSTS}
    if not url or not allowed or url != url.strip() or any(c in url for c in "\\\t\r\n\x00 "):
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        return None
    if parts.hostname.lower() not in allowed or parts.netloc.lower() not in allowed | {f"{h}:443" for h in allowed}:
        return None
    # Django's own check as a second opinion (it compares hosts case-sensitively, hence lower()).
    if not url_has_allowed_host_and_scheme(url.lower(), allowed_hosts=allowed, require_https=True):
        return None
    return url


def prefill(params, user, pol: policy.Policy, room: policy.Headroom) -> tuple[dict, list[str], dict | None]:
    """Initial values from an onboarding link: a template (`?template=<slug>`) or ad-hoc
    `name`, `monthly_limit` and `completions`, each validated and clamped to the user's policy.
    `manage` is never taken from a URL. Returns the initial values, notes on what the link changed,
    and, when the link asked for more than the policy allows, those values for an approval request."""
    cap = room.key_cap(pol)
    initial = {
        "name": "",
        "monthly_limit": policy.default_monthly_limit(pol, room),
        "manage": "none",
        "completions": "write",
    }
    today = timezone.now().date()
    initial.update(expiry_fields.initial_for(expiry_fields.default_days(pol), today))
    if "write" not in pol.completions_levels:
        initial["completions"] = pol.completions_levels[-1]
    notes: list[str] = []
    wanted = {}
    if params.get("template"):
        template = OnboardingTemplate.objects.filter(slug=params["template"]).first()
        if template is None:
            return initial, ["The onboarding link names a template that does not exist; ask whoever sent it."], None
        initial["template"] = template.slug
        wanted = {
            "name": template.name_pattern.replace("{username}", user.get_username()),
            "monthly_limit": str(template.monthly_limit),
            "completions": template.completions,
            "manage": template.manage,
        }
        if template.expiry_days:
            wanted["expires"] = template.expiry_days
        notes.append(f"Values come from the onboarding link “{template.description or template.slug}”.")
    else:
        wanted = {k: params[k] for k in ("name", "monthly_limit", "completions", "expires") if k in params}
        if wanted:
            notes.append("Values were filled in from the link you followed.")
        if "manage" in params:
            notes.append("Links cannot set the manage permission; it is “none”.")
    beyond = {}
    if "name" in wanted:
        try:
            initial["name"] = clean_name(wanted["name"])
        except forms.ValidationError:
            notes.append("The name in the link was not usable and was left empty.")
    if "monthly_limit" in wanted:
        try:
            amount = parse_amount(wanted["monthly_limit"])
            if amount <= 0:  # "no cap" is never taken from a link, not even for admins
                raise forms.ValidationError("too low")
            if cap is not None and amount > cap:
                beyond["monthly_limit"] = amount
                if cap < pol.min_limit:  # nothing left to prefill: never a limit the form would refuse
                    notes.append(
                        f"The link asked for a {policy.money(amount)} limit, but your keys already use your "
                        "whole monthly budget (see below)."
                    )
                    amount = None
                else:
                    notes.append(
                        f"The link asked for a {policy.money(amount)} limit; without approval you can have "
                        f"up to {policy.money(cap)}."
                    )
                    amount = cap
            initial["monthly_limit"] = amount
        except forms.ValidationError:
            notes.append("The monthly limit in the link was not usable; the default is shown.")
    if "expires" in wanted:
        values, note = expiry_fields.from_link(wanted["expires"], pol, today)
        initial.update(values or {})
        if note:
            notes.append(note)
    if wanted.get("completions") in pol.completions_levels:
        initial["completions"] = wanted["completions"]
    elif wanted.get("completions") in policy.LEVELS:
        beyond["completions"] = wanted["completions"]
        notes.append(f"The link asked for completions “{wanted['completions']}”, beyond your policy.")
    if wanted.get("manage") in ("read", "write") and not pol.is_admin:
        if pol.manage_requestable:
            beyond["manage"] = wanted["manage"]
        notes.append(f"The template asks for manage “{wanted['manage']}”, which needs an admin's approval.")
    elif wanted.get("manage") in pol.manage_levels:
        initial["manage"] = wanted["manage"]
    approval_values = {**initial, **beyond} if beyond and initial["name"] else None
    return initial, notes, approval_values
