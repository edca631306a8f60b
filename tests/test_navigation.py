"""What every page's navigation needs (portal.context_processors.navigation), read only when shown."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from keys.models import ApprovalRequest


def approval_counts(queries) -> int:
    return sum('FROM "keys_approvalrequest"' in q["sql"] and "COUNT(" in q["sql"] for q in queries.captured_queries)


def test_pending_approvals_are_counted_once_where_the_navigation_shows_them(aclient, requester):
    ApprovalRequest.objects.create(
        requester=requester, name="big", monthly_limit=250, manage="none", completions="write", reason="batch jobs"
    )
    with CaptureQueriesContext(connection) as page:
        html = aclient.get("/keys/new/").content.decode()
    assert 'Approvals <span class="badge">1' in html and approval_counts(page) == 1

    with CaptureQueriesContext(connection) as partial:  # htmx: the form alone, no navigation
        html = aclient.get("/keys/new/", HTTP_HX_REQUEST="true").content.decode()
    assert "<nav" not in html and 'id="mint"' in html and approval_counts(partial) == 0


def test_requesters_never_count_approvals(rclient, requester):
    with CaptureQueriesContext(connection) as page:
        html = rclient.get("/keys/new/").content.decode()
    assert "Approvals" not in html and approval_counts(page) == 0
