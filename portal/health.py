"""/healthz for load balancers and Docker's HEALTHCHECK.

Answered before any other middleware, so it needs no session, no allowed Host header and no HTTPS
redirect (a container probe calls it on plain HTTP with Host 127.0.0.1)."""

from django.db import connection
from django.http import HttpResponse


class HealthCheckMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path != "/healthz":
            return self.get_response(request)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")  # plain SQL: a round trip that touches no table is the question
        except Exception:  # any database failure means "not healthy", whatever the driver raises
            return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
        return HttpResponse("ok\n", content_type="text/plain")
