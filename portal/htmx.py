"""One way to answer htmx (the `for_htmx` pattern of django-htmx-patterns): the whole page, or
just the inline partial htmx swaps in. Every view that renders partials goes through here."""

from __future__ import annotations

from functools import wraps

from django.template.response import TemplateResponse
from django.utils.cache import patch_vary_headers


def wants_partial(request) -> bool:
    """An htmx request that swaps part of the page. Boosted navigations and history restores
    replace the whole document, so they get the page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request


def render_htmx(request, template: str, partial: str, context: dict | None = None, *, status: int = 200):
    """`template`, or its `{% partialdef partial %}` for an htmx swap; varies on HX-Request, since
    the answer depends on it (caches and the browser's back button must not mix the two)."""
    name = f"{template}#{partial}" if wants_partial(request) else template
    response = TemplateResponse(request, name, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def for_htmx(partial: str):
    """Decorator form, for a view that returns the page as a TemplateResponse: an htmx swap gets
    its `partial` instead."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            if isinstance(response, TemplateResponse) and wants_partial(request) and "#" not in response.template_name:
                response.template_name = f"{response.template_name}#{partial}"
            patch_vary_headers(response, ["HX-Request"])
            return response

        return wrapped

    return decorator
