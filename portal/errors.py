"""Error pages that need nothing that might be broken: no database, no request context."""

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.template import loader
from django.views import defaults


def server_error(request):
    """A database outage is a 503 the user can act on ("try again shortly"), not a bare 500."""
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        response = HttpResponse(loader.render_to_string("503.html"), status=503)
        response["Retry-After"] = "30"
        return response
    return defaults.server_error(request)
