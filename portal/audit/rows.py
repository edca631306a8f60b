"""The audit table's rows: each event's cells worked out once, in plain Python, and its row of
HTML written in one step. Done by template filters and tags (a label lookup, two date formats, two
URL reversals a row), then by a template's two dozen escaped variables a row, rows were most of a
page's time; written here they cost a fifth of that (docs/performance.md)."""

from __future__ import annotations

from datetime import UTC
from html import escape

from django.utils.safestring import SafeString, mark_safe

from keys.templatetags.money import usd
from portal.routes import route

from . import chain
from .models import AuditEvent

ACTION_LABELS = dict(AuditEvent.Action.choices)
# The columns a row of the table shows: not the detail (the event's own page has it, with the hashes).
ROW_FIELDS = tuple(f for f in chain.CHAINED_FIELDS if f not in ("actor_id", "issuance_id", "detail"))


def shown(rows: list[dict]) -> list[dict]:
    """Each row's cells as the table shows them: the action's label, the time in UTC (ISO 8601 for
    `datetime`, to the second on screen), the limit in dollars, "—" for a missing actor or level.
    Escaped later: by the key history's template, or by table_row."""
    event_url, key_url = route("audit-event"), route("audit-key")
    for row in rows:
        created = row["created_at"].astimezone(UTC)
        manage, completions = row["manage"], row["completions"]
        row.update(
            action_label=ACTION_LABELS.get(row["action"], row["action"]),
            time_iso=created.isoformat(),
            time=created.strftime("%Y-%m-%d %H:%M:%S"),
            actor=row["actor_username"] or "—",
            limit=usd(row["monthly_limit"]) if row["monthly_limit"] is not None else "",
            levels=f"manage {manage or '—'}, completions {completions or '—'}" if manage or completions else "",
            url=event_url(row["seq"]),
            key_url=key_url(row["api_key_id"]) if row["api_key_id"] else "",
        )
        row["source_ip"] = row["source_ip"] or ""
        row["upstream_status"] = row["upstream_status"] or ""
    return rows


# One row of templates/audit/log.html's table. Every {slot} is a value escaped by table_row.
_ROW = (
    "<tr><td>{seq}</td>"
    '<td><time datetime="{time_iso}" data-local>{time}</time></td>'
    "<td>{actor}{email}</td>"
    '<td>{action_label}<br><code class="muted">{action}</code></td>'
    '<td><span class="outcome outcome-{outcome}">{outcome}</span></td>'
    "<td>{key_name}{key}</td>"
    "<td>{limit}{asked}</td>"
    "<td>{source_ip}</td>"
    "<td>{upstream_status}</td>"
    '<td><a href="{url}">Details<span class="visually-hidden"> of event {seq}</span></a></td></tr>\n'
)
_MUTED = '<br><span class="muted">{}</span>'
_KEY = '<br><a href="{}" class="muted">{}</a>'
_CELLS = (
    *("seq", "time_iso", "time", "actor", "actor_email", "action_label", "action", "outcome", "key_name"),
    *("key_url", "api_key_id", "limit", "levels", "source_ip", "upstream_status", "url"),
)


def table_row(row: dict) -> SafeString:
    """A row of shown() as the table's HTML. Each value is escaped by html.escape, which is what
    Django's escape() does after a check for lazy text that was most of the cost; the markup
    around them is constant. Identifiers (event number, HTTP status) are never localized."""
    cell = {name: escape(str(row[name])) for name in _CELLS}
    html = _ROW.format(
        **cell,
        email=_MUTED.format(cell["actor_email"]) if row["actor_email"] else "",
        key=_KEY.format(cell["key_url"], cell["api_key_id"]) if row["key_url"] else "",
        asked=_MUTED.format(cell["levels"]) if row["levels"] else "",
    )
    return mark_safe(html)  # noqa: S308 - every value in it went through escape() above
