"""Sign out sessions that have been idle longer than PORTAL_IDLE_TIMEOUT (threat 16).

The last-seen time is written at most once a minute, so an active user does not cost a session
write on every request."""

import time

from django.conf import settings
from django.contrib.auth import logout

_KEY = "portal_last_seen"
_WRITE_EVERY = 60


class IdleTimeoutMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = int(time.time())
            last_seen = request.session.get(_KEY, now)
            if now - last_seen > settings.PORTAL_IDLE_TIMEOUT:
                logout(request)  # the next check (LoginRequiredMiddleware) sends them to sign in
            elif now - last_seen >= _WRITE_EVERY or _KEY not in request.session:
                request.session[_KEY] = now
        return self.get_response(request)
