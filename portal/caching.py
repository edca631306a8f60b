"""Signed-in pages are nobody else's: `Cache-Control: private, no-store` on every response to a
signed-in person (what a shared proxy or the browser's disk cache keeps could show one person's
keys, approvals or audit log to the next user of the machine). Static files (WhiteNoise, earlier
in the chain) keep their long-lived caching. Views that answer htmx differently say
`Vary: HX-Request` themselves (portal/htmx.py)."""

from __future__ import annotations

from django.utils.cache import patch_cache_control


class PrivatePagesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        signed_in = request.user.is_authenticated  # before: a sign-out's answer is private too
        response = self.get_response(request)
        if signed_in or request.user.is_authenticated:
            patch_cache_control(response, private=True, no_store=True)
        return response
