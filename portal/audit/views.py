"""The audit log in the browser: filter, page (keyset, never OFFSET), inspect, export.

For superusers and holders of `audit.view_audit_log` (the "Portal admins" group has it). Viewing and
exporting are themselves audit events.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from keys.models import Issuance
from portal.accounts.permissions import auditor_required
from portal.htmx import render_htmx, wants_partial

from . import chain, periods
from .export import export_response
from .forms import AuditFilterForm
from .models import OWN_ACTIONS, AuditEvent
from .rows import ROW_FIELDS, shown, table_row

PAGE_SIZE = 50


def filtered(data: dict) -> QuerySet:
    qs = AuditEvent.objects.all()
    if not data.get("own") and data.get("action") not in OWN_ACTIONS:
        qs = qs.exclude(action__in=OWN_ACTIONS)
    if data.get("actor"):
        qs = qs.filter(actor_username=data["actor"].strip())
    if data.get("action"):
        qs = qs.filter(action=data["action"])
    if data.get("outcome"):
        qs = qs.filter(outcome=data["outcome"])
    since = datetime.combine(data["since"], time.min, UTC) if data.get("since") else None
    until = datetime.combine(data["until"] + timedelta(days=1), time.min, UTC) if data.get("until") else None
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    qs = periods.within(qs, since, until)
    if data.get("q"):
        term = data["q"].strip()
        try:
            # A whole key id is matched exactly, through the (api_key_id, seq) index.
            qs = qs.filter(api_key_id=str(uuid.UUID(term)))
        except ValueError:
            qs = qs.filter(_contains("key_name", term) | _contains("api_key_id", term))
    return qs


_WORD = re.compile(r"[^\W_]{3,}")  # a run of letters or digits long enough to make a trigram


def _contains(field: str, term: str) -> Q:
    """`field` contains `term`, ignoring case, with the term's words (longest first) as conditions of
    their own before it. Each is implied by the whole term, so the matches are the same. But
    PostgreSQL's trigram index (audit 0004) takes each as a key of its own, in this order, and
    reads a word that most names share (the "key" of "key-123456") only where the rarer words
    matched: the whole term as one key read all of that word's posting list, a cost growing with
    the log (6.1 ms of SQL at 1,000,000 events; 1.3 ms this way, docs/performance.md)."""
    words = sorted({w for w in _WORD.findall(term) if len(w) < len(term)}, key=len, reverse=True)
    condition = Q()
    for word in words[:3]:
        condition &= Q(**{f"{field}__icontains": word})
    return condition & Q(**{f"{field}__icontains": term})


def _newer_from(qs: QuerySet, seq: int) -> bool:
    """Is there a matching event at or after `seq`? A page link's cursor is an event of the same
    filters, so this one index probe normally stops at the cursor itself, on any filter (a key-name
    search too) and at any depth. Ordered on purpose: a bare exists() drops the ORDER BY and
    PostgreSQL may scan the table from the start (docs/performance.md)."""
    return qs.filter(seq__gte=seq).order_by("seq").values_list("seq", flat=True).first() is not None


def _older_from(qs: QuerySet, seq: int) -> bool:
    return qs.filter(seq__lte=seq).order_by("-seq").values_list("seq", flat=True).first() is not None


def keyset_page(qs: QuerySet, data: dict) -> dict:
    """One page, newest first, by seq cursors: at most two indexed queries whatever the page, and
    none that walks further than a page (no count, no exists over the table)."""
    after, before = data.get("after"), data.get("before")
    if after is not None:
        # Every match in (after, newest shown] is on this page: older ones can only be at `after` or below.
        rows = list(qs.filter(seq__gt=after).order_by("seq")[: PAGE_SIZE + 1])
        has_newer = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
        has_older = bool(rows) and _older_from(qs, after)
    elif data.get("last"):
        rows = list(qs.order_by("seq")[: PAGE_SIZE + 1])
        has_newer = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
        has_older = False
    else:
        rows = list((qs.filter(seq__lt=before) if before else qs).order_by("-seq")[: PAGE_SIZE + 1])
        has_older = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        has_newer = before is not None and bool(rows) and _newer_from(qs, before)
    return {"events": rows, "has_newer": has_newer, "has_older": has_older}


def page_status(form: AuditFilterForm, page: dict) -> str:
    """What the results show, in words: the page's `role="status"` line, which htmx updates in place
    (out of band) on every filter or page change so that screen readers announce it."""
    if form.errors:
        return "No events shown: correct the filters above."
    events, has_newer, has_older = page["events"], page["has_newer"], page["has_older"]
    filtering = bool(form.filter_query())
    if not events:
        return "No events match these filters." if filtering else "No events to show."
    n = len(events)
    noun = ("matching " if filtering else "") + ("event" if n == 1 else "events")
    span = f"#{events[0]['seq']} to #{events[-1]['seq']}"
    if not has_newer and not has_older:
        return f"Showing 1 {noun}." if n == 1 else f"Showing all {n} {noun}, newest first."
    if not has_newer:
        return f"Showing the {n} newest {noun} ({span}); older events are on the next pages."
    if not has_older:
        return f"Showing the {n} oldest {noun} ({span}); newer events are on the previous pages."
    return f"Showing {n} {noun}, {span}, newest first; there are newer and older pages."


@require_GET
@auditor_required
def audit_log(request):
    form = AuditFilterForm(request.GET)
    context = {"form": form, "events": [], "has_newer": False, "has_older": False}
    if form.is_valid():
        context.update(keyset_page(filtered(form.cleaned_data).values(*ROW_FIELDS), form.cleaned_data))
        context["events"] = shown(context["events"])
        context["rows"] = [table_row(event) for event in context["events"]]
        context["filter_query"] = form.filter_query()
    context["status"] = page_status(form, context)
    chain.record_request(request, AuditEvent.Action.AUDIT_VIEWED, detail=request.GET.urlencode())
    # The fragment carries the status line too, swapped out of band into the page's stable one.
    context["oob"] = wants_partial(request)
    return render_htmx(request, "audit/log.html", "results", context)


@require_GET
@auditor_required
def audit_event(request, seq: int):
    try:
        event = AuditEvent.objects.get(seq=seq)
    except AuditEvent.DoesNotExist:
        raise Http404("No such audit event.") from None
    chain.record_request(request, AuditEvent.Action.AUDIT_VIEWED, detail=f"event={seq}")
    return render(request, "audit/event.html", {"event": event})


@require_GET
@auditor_required
def audit_key(request, api_key_id: str):
    issuances = Issuance.objects.filter(api_key_id=api_key_id).values("pk")
    matching = AuditEvent.objects.filter(Q(api_key_id=api_key_id) | Q(issuance__in=issuances))
    events = shown(list(matching.order_by("seq").values(*ROW_FIELDS)))
    if not events:
        raise Http404("No audit events for this key.")
    chain.record_request(request, AuditEvent.Action.AUDIT_VIEWED, detail=f"key={api_key_id}")
    return render(request, "audit/key.html", {"events": events, "api_key_id": api_key_id})


@require_GET
@auditor_required
def audit_export(request, fmt: str):
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        page = {"events": [], "has_newer": False, "has_older": False}
        context = {"form": form, **page, "status": page_status(form, page)}
        return render(request, "audit/log.html", context, status=400)
    exported = chain.record_request(
        request, AuditEvent.Action.AUDIT_EXPORTED, detail=f"format={fmt} {form.filter_query()}"
    )
    # Exactly the events that existed when the export was asked for (not its own audit event). An
    # export is the record (for a SIEM, an auditor): it keeps the log's own events, which only the
    # screen hides by default.
    rows = filtered({**form.cleaned_data, "own": True}).filter(seq__lt=exported.seq)
    return export_response(rows, fmt)
