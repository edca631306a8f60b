"""Error pages that need nothing that might be broken: no database, no request context."""

import re
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.template import loader
from django.views import defaults
from django.views.debug import SafeExceptionReporterFilter


def server_error(request):
    """A database outage is a 503 the user can act on ("try again shortly"), not a bare 500."""
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        response = HttpResponse(loader.render_to_string("503.html"), status=503)
        response["Retry-After"] = "30"
        return response
    return defaults.server_error(request)


class ReportFilter(SafeExceptionReporterFilter):
    """Error reports (the e-mails to ADMINS) hide CSRF secrets and the session cookie as they hide
    other secrets. Django's default pattern misses `META["CSRF_COOKIE"]` (the unmasked CSRF secret)
    and the `sessionid` cookie, and shows a form's `csrfmiddlewaretoken` unless the view says
    otherwise."""

    hidden_settings = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CSRF|SESSION", flags=re.I)
    hidden_post_parameters = ("csrfmiddlewaretoken",)

    def get_post_parameters(self, request):
        return self._hide(super().get_post_parameters(request))

    def get_cleansed_multivaluedict(self, request, multivaluedict):
        """A frame's local that holds form data (`data = request.POST`)."""
        return self._hide(super().get_cleansed_multivaluedict(request, multivaluedict))

    def _hide(self, params):
        if not any(name in params for name in self.hidden_post_parameters):
            return params
        params = params.copy()
        for name in self.hidden_post_parameters:
            if name in params:
                params[name] = self.cleansed_substitute
        return params
