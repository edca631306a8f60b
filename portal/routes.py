"""URLs for a page of rows: each route reversed once a page, not once a row (the audit log, the key list)."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.urls import reverse

_PLAIN = re.compile(r"[0-9A-Za-z-]+")  # what reverse() puts in a URL unchanged (no quoting needed)


def route(name: str) -> Callable[[object], str]:
    """`reverse(name, args=[value])` for a page of rows: reversed once, and a plain value (an event
    number, a key's id, a UUID) put in the place of the marker; any other value is reversed as usual."""
    marker = "987654321"
    head, tail = reverse(name, args=[marker]).rsplit(marker, 1)

    def url(value) -> str:
        text = str(value)
        return f"{head}{text}{tail}" if _PLAIN.fullmatch(text) else reverse(name, args=[value])

    return url
