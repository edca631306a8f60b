"""Onboarding links: where "Continue onboarding" may lead after a key is stored."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.utils.http import url_has_allowed_host_and_scheme


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
