"""/spend/: what the keys cost, for portal admins and holders of "Can view spend" (finance); 403 for others."""

from __future__ import annotations

import csv

from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from portal.accounts.permissions import spend_viewer_required
from portal.audit import chain
from portal.audit.export import neutralise
from portal.audit.models import AuditEvent

from . import spend, usage
from .charts import trend_chart

CSV_FIELDS = [
    *("key_name", "api_key_id", "owner", "team", "status"),
    *("monthly_limit", "this_month", "last_month", "last_used"),
]


def _context(request) -> tuple[dict, int]:
    """The page's figures for the `team` asked for (an unknown team: an alert, and every team)."""
    teams = spend.team_names()
    team, team_error = request.GET.get("team", ""), ""
    if team and team not in teams:
        team_error = "There is no team by that name, so every team is shown."
        team = ""
    org = usage.org_usage()
    context = {"org": org, "teams": teams, "team": team, "team_error": team_error}
    if org.ok:
        context.update(spend.summary(org, team))
        context["chart"] = trend_chart(context["trend"])
    return context, 400 if team_error else 200 if org.ok else 503


@require_GET
@spend_viewer_required
def spend_page(request):
    context, status = _context(request)
    return render(request, "keys/spend.html", context, status=status)


@require_GET
@spend_viewer_required
def spend_export(request):
    """The figures by key as CSV, cells neutralised against spreadsheet formulas like the audit export."""
    context, status = _context(request)
    if status != 200:
        return render(request, "keys/spend.html", context, status=status)
    detail = f"team={context['team'] or 'all'}; {len(context['rows'])} keys"
    chain.record_request(request, AuditEvent.Action.SPEND_EXPORTED, detail=detail)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="spend-{timezone.now():%Y%m%dT%H%M%SZ}.csv"'
    response["Cache-Control"] = "no-store"
    writer = csv.writer(response)
    writer.writerow(CSV_FIELDS)
    for r in context["rows"]:
        values = [r.name, r.api_key_id, r.owner, r.team, r.status, r.limit, r.this_month, r.last_month, r.last_used]
        writer.writerow([neutralise(v) for v in values])
    return response
