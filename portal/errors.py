"""Error pages: the same branded pages (navigation and a way back) in production and in the sandbox."""

import logging
import re
import sys

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse
from django.template import loader
from django.views import defaults
from django.views.debug import SafeExceptionReporterFilter

logger = logging.getLogger("django.request")


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


class SandboxErrorPages:
    """The sandbox runs at DEBUG (local secrets, no HTTPS) but must show the pages production shows:
    Django answers a 404, a 400 and a crash at DEBUG with its technical pages, so here they get the
    portal's own (handler403 already applies at DEBUG). Does nothing outside the sandbox, where a
    developer at DEBUG wants the technical pages."""

    def __init__(self, get_response):
        self.get_response = get_response

    @staticmethod
    def active() -> bool:
        return settings.DEBUG and settings.PORTAL_SANDBOX

    def __call__(self, request):
        response = self.get_response(request)
        # An address no URL pattern matched never reaches a view (nor process_exception).
        if self.active() and response.status_code == 404 and request.resolver_match is None:
            return defaults.page_not_found(request, Http404())
        return response

    def process_exception(self, request, exception):
        if not self.active() or isinstance(exception, PermissionDenied):
            return None
        if isinstance(exception, Http404):
            return defaults.page_not_found(request, exception)
        if isinstance(exception, (BadRequest, SuspiciousOperation)):
            return defaults.bad_request(request, exception)
        logger.error("Internal Server Error: %s", request.path, exc_info=exception, extra={"request": request})
        return server_error(request)
