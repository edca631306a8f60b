"""One way to answer htmx (the `for_htmx` pattern of django-htmx-patterns): the whole page, or
just the inline partial htmx swaps in. Every view that renders partials goes through here."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers


def wants_partial(request) -> bool:
    """An htmx request that swaps part of the page. Boosted navigations and history restores
    replace the whole document, so they get the page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request


def render_htmx(
    request,
    template: str,
    partial: str,
    context: dict | None = None,
    *,
    status: int = 200,
    fragment_only: bool = False,
) -> HttpResponse:
    """`template`, or its `{% partialdef partial %}` for an htmx swap. `fragment_only` is for an
    endpoint that exists to be swapped in (a row's spend, a key's usage): it answers with the
    partial whoever asks.

    Varies on HX-Request, since the answer depends on it (caches and the browser's back button must
    not mix the two). Rendered here, inside the view, so that a view's `@sensitive_variables` also
    covers the template's frames in error reports (the mint page renders a secret)."""
    name = f"{template}#{partial}" if fragment_only or wants_partial(request) else template
    response = render(request, name, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response
