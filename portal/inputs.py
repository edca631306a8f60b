"""Input no page of the portal ever sends, refused before any view sees it.

A NUL byte cannot be stored in or compared with PostgreSQL text (psycopg refuses the query, which
was a 500 wherever a value reaches a lookup: `?template=`, `/audit/keys/<id>/`, a sign-in's
username). No form or link of the portal produces one, so a request carrying one in its path, its
query string or its form data gets a plain 400 at once, whatever view it was meant for."""

from __future__ import annotations

from django.core.exceptions import BadRequest

NUL = "\x00"


def _has_nul(params) -> bool:
    return any(NUL in key or any(NUL in value for value in values) for key, values in params.lists())


class RejectNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if NUL in request.path or _has_nul(request.GET) or (request.method == "POST" and _has_nul(request.POST)):
            raise BadRequest("A NUL byte in the request.")
        return self.get_response(request)


def parse_id(value: str | None) -> int | None:
    """A database id from a query parameter: plain ASCII digits within a 64-bit integer, else None
    (`str.isdigit()` also accepts "²" and "٣", which int() then rejects or reads unexpectedly)."""
    if not value or len(value) > 19 or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 0 < number < 2**63 else None
