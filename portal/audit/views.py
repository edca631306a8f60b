"""The audit log in the browser: filter, page (keyset, never OFFSET), inspect, export.

For superusers and holders of `audit.view_audit_log` (the "Portal admins" group has it). Viewing and
exporting are themselves audit events.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.db.models import Q, QuerySet
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from keys.models import Issuance
from portal.accounts.permissions import auditor_required

from . import chain
from .models import AuditEvent

PAGE_SIZE = 50
EXPORT_BATCH = 2000
EXPORT_FIELDS = [
    "seq",
    "time_utc",
    "actor_username",
    "actor_email",
    "action",
    "outcome",
    "key_name",
    "api_key_id",
    "monthly_limit",
    "manage",
    "completions",
    "source_ip",
    "upstream_status",
    "detail",
    "hash",
]
_DB_FIELDS = [f for f in EXPORT_FIELDS if f != "time_utc"] + ["created_at"]


class AuditFilterForm(forms.Form):
    actor = forms.CharField(label="Actor (username)", required=False, max_length=150)
    action = forms.ChoiceField(label="Action", required=False, choices=[("", "Any action"), *AuditEvent.Action.choices])
    outcome = forms.ChoiceField(
        label="Outcome", required=False, choices=[("", "Any outcome"), *AuditEvent.Outcome.choices]
    )
    since = forms.DateField(label="From (UTC date)", required=False)
    until = forms.DateField(label="To (UTC date, inclusive)", required=False)
    q = forms.CharField(label="Key name or id contains", required=False, max_length=100)
    # Keyset cursors: events older than `before`, newer than `after`, or the oldest page (`last`).
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    last = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("The “From” date must not be after the “To” date.")
        return data

    def filter_query(self) -> str:
        """The filters (not the cursor) as a query string, for links and exports."""
        from urllib.parse import urlencode

        keys = ("actor", "action", "outcome", "since", "until", "q")
        return urlencode({k: self.data[k] for k in keys if self.data.get(k)})


def filtered(data: dict) -> QuerySet:
    qs = AuditEvent.objects.all()
    if data.get("actor"):
        qs = qs.filter(actor_username=data["actor"].strip())
    if data.get("action"):
        qs = qs.filter(action=data["action"])
    if data.get("outcome"):
        qs = qs.filter(outcome=data["outcome"])
    if data.get("since"):
        qs = qs.filter(created_at__gte=datetime.combine(data["since"], time.min, UTC))
    if data.get("until"):
        qs = qs.filter(created_at__lt=datetime.combine(data["until"] + timedelta(days=1), time.min, UTC))
    if data.get("q"):
        term = data["q"].strip()
        try:
            # A whole key id is matched exactly, through the (api_key_id, seq) index.
            qs = qs.filter(api_key_id=str(uuid.UUID(term)))
        except ValueError:
            qs = qs.filter(Q(key_name__icontains=term) | Q(api_key_id__icontains=term))
    return qs


def _any_newer(qs: QuerySet, seq: int) -> bool:
    # Ordered on purpose: a bare exists() drops the ORDER BY and PostgreSQL may scan the table
    # from the start (docs/audit-performance.md); ordered, it is one index probe.
    return qs.filter(seq__gt=seq).order_by("seq").values_list("seq", flat=True).first() is not None


def _any_older(qs: QuerySet, seq: int) -> bool:
    return qs.filter(seq__lt=seq).order_by("-seq").values_list("seq", flat=True).first() is not None


def keyset_page(qs: QuerySet, data: dict) -> dict:
    """One page, newest first, by seq cursors: at most three indexed queries whatever the page."""
    if data.get("after") is not None:
        rows = list(qs.filter(seq__gt=data["after"]).order_by("seq")[: PAGE_SIZE + 1])
        has_newer = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
        has_older = bool(rows) and _any_older(qs, rows[-1].seq)
    elif data.get("last"):
        rows = list(qs.order_by("seq")[:PAGE_SIZE])[::-1]
        has_older = False
        has_newer = bool(rows) and _any_newer(qs, rows[0].seq)
    else:
        before = data.get("before")
        rows = list((qs.filter(seq__lt=before) if before else qs).order_by("-seq")[: PAGE_SIZE + 1])
        has_older = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        has_newer = before is not None and bool(rows) and _any_newer(qs, rows[0].seq)
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
    span = f"#{events[0].seq} to #{events[-1].seq}"
    if not has_newer and not has_older:
        return f"Showing 1 {noun}." if n == 1 else f"Showing all {n} {noun}, newest first."
    if not has_newer:
        return f"Showing the {n} newest {noun} ({span}); older events are on the next pages."
    if not has_older:
        return f"Showing the {n} oldest {noun} ({span}); newer events are on the previous pages."
    return f"Showing {n} {noun}, {span}, newest first; there are newer and older pages."


@require_GET
@vary_on_headers("HX-Request")
@auditor_required
def audit_log(request):
    form = AuditFilterForm(request.GET)
    context = {"form": form, "events": [], "has_newer": False, "has_older": False}
    if form.is_valid():
        context.update(keyset_page(filtered(form.cleaned_data), form.cleaned_data))
        context["filter_query"] = form.filter_query()
    context["status"] = page_status(form, context)
    _record(request, AuditEvent.Action.AUDIT_VIEWED, request.GET.urlencode())
    partial = request.htmx and not request.htmx.history_restore_request
    # The fragment carries the status line too, swapped out of band into the page's stable one.
    context["oob"] = bool(partial)
    return render(request, "audit/log.html#results" if partial else "audit/log.html", context)


@require_GET
@auditor_required
def audit_event(request, seq: int):
    try:
        event = AuditEvent.objects.get(seq=seq)
    except AuditEvent.DoesNotExist:
        raise Http404("No such audit event.") from None
    return render(request, "audit/event.html", {"event": event})


@require_GET
@auditor_required
def audit_key(request, api_key_id: str):
    issuances = Issuance.objects.filter(api_key_id=api_key_id).values("pk")
    events = list(AuditEvent.objects.filter(Q(api_key_id=api_key_id) | Q(issuance__in=issuances)).order_by("seq"))
    if not events:
        raise Http404("No audit events for this key.")
    return render(request, "audit/key.html", {"events": events, "api_key_id": api_key_id})


@require_GET
@auditor_required
def audit_export(request, fmt: str):
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        page = {"events": [], "has_newer": False, "has_older": False}
        context = {"form": form, **page, "status": page_status(form, page)}
        return render(request, "audit/log.html", context, status=400)
    exported = _record(request, AuditEvent.Action.AUDIT_EXPORTED, f"format={fmt} {form.filter_query()}")
    # Exactly the events that existed when the export was asked for (not its own audit event).
    rows = _export_rows(filtered(form.cleaned_data).filter(seq__lt=exported.seq))
    body = _csv_lines(rows) if fmt == "csv" else _jsonl_lines(rows)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(body, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{"csv" if fmt == "csv" else "jsonl"}"'
    response["Cache-Control"] = "no-store"
    return response


def _record(request, action: str, detail: str) -> AuditEvent:
    return chain.record(
        action, AuditEvent.Outcome.SUCCESS, actor=request.user, source_ip=chain.client_ip(request), detail=detail
    )


def _export_rows(qs: QuerySet) -> Iterator[dict]:
    """Newest first, in keyset batches: constant memory on any database, no server-side cursor."""
    last = None
    while True:
        batch = list(
            (qs if last is None else qs.filter(seq__lt=last)).order_by("-seq").values(*_DB_FIELDS)[:EXPORT_BATCH]
        )
        for row in batch:
            row["time_utc"] = row.pop("created_at").astimezone(UTC).isoformat()
            if row["monthly_limit"] is not None:
                row["monthly_limit"] = f"{row['monthly_limit']:.2f}"
            yield row
        if len(batch) < EXPORT_BATCH:
            return
        last = batch[-1]["seq"]


class _Echo:
    def write(self, value: str) -> str:
        return value


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value) -> str:
    """Spreadsheets run cells that start with = + - @ (or a tab/CR before one) as formulas."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _chunks(lines: Iterator[str], size: int = 500) -> Iterator[str]:
    """Send a few hundred lines per write, not one: a chunk per row costs both ends CPU."""
    buffer: list[str] = []
    for line in lines:
        buffer.append(line)
        if len(buffer) >= size:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def _csv_lines(rows: Iterator[dict]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    yield from _chunks(writer.writerow([neutralise(row[f]) for f in EXPORT_FIELDS]) for row in rows)


def _jsonl_lines(rows: Iterator[dict]) -> Iterator[str]:
    # ensure_ascii: U+2028 and friends stay escaped, so every record is exactly one line.
    yield from _chunks(json.dumps({f: row[f] for f in EXPORT_FIELDS}, ensure_ascii=True) + "\n" for row in rows)
