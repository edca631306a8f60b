"""Paging "My keys" / "All keys": keyset cursors on (created_at, id), never OFFSET, never a silent cut.

Newest first, with the id breaking ties between keys created in the same instant (as the model's
`ordering` does; indexes on (created_at, id) and (owner, created_at, id) serve both lists). A cursor is a key id
(`?before=<id>` / `?after=<id>`, as on the audit log); its position is looked up among the keys the
user may see, so a cursor naming someone else's key, or no key, positions nothing and reveals nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from urllib.parse import urlencode

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from portal.accounts.permissions import is_portal_admin
from portal.routes import route

from .models import IssuedKey
from .templatetags.money import usd

PAGE_SIZE = 50
UNKNOWN_LIMIT = 100  # unsettled issuances shown above the keys (first page only)
NEWEST_FIRST = ("-created_at", "-pk")
OLDEST_FIRST = ("created_at", "pk")
STALE_CURSOR = "That page link no longer points at a key you can see, so this is the newest page."
STATUS_LABELS = dict(IssuedKey.Status.choices)
REVOCATION_FAILED = "revocation_failed"  # the status filter's value for active keys whose revocation failed
FAILURES_LISTED = 10  # All keys' alert names at most this many of them, those that failed first


def visible_keys(user, *, own: bool = False) -> QuerySet:
    """Admins see every key; everyone else only their own (others' ids answer 404, not 403).
    `own`: the user's own keys only, admins' too."""
    keys = IssuedKey.objects.select_related("owner", "issuance")
    return keys if is_portal_admin(user) and not own else keys.filter(owner=user)


def key_or_404(request, pk: int, *, own: bool = False) -> IssuedKey:
    """The key if the user may see it (`own`: if it is theirs: rotating or asking for approval is
    something one does for oneself), else 404; with the key it replaces, which its page shows."""
    return get_object_or_404(visible_keys(request.user, own=own).select_related("issuance__rotates"), pk=pk)


def _newer_than(created_at, pk) -> Q:
    return Q(created_at__gt=created_at) | Q(created_at=created_at, pk__gt=pk)


def _older_than(created_at, pk) -> Q:
    return Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk)


def key_page(keys: QuerySet, visible: QuerySet, data: dict, filters: dict[str, str]) -> dict:
    """One page of `keys` (already filtered) and where it sits: at most four queries whatever the page.

    Links are query strings (filters kept, cursor replaced) for the template to put after the
    list's URL. `visible` is every key the user may see: cursors are looked up there, so a page link still
    works after the filters change, and never positions on a key the user may not see.
    """
    mode, anchor, notice = "last" if data.get("last") else "first", None, ""
    cursor_id = data.get("before") or data.get("after")
    if cursor_id:
        anchor = visible.filter(pk=cursor_id).values_list("created_at", "pk").first()
        mode = ("after" if data.get("after") else "before") if anchor else "first"
        notice = "" if anchor else STALE_CURSOR
    total = keys.count()
    if mode == "after":
        rows = list(keys.filter(_newer_than(*anchor)).order_by(*OLDEST_FIRST)[:PAGE_SIZE])[::-1]
    elif mode == "before":
        rows = list(keys.filter(_older_than(*anchor)).order_by(*NEWEST_FIRST)[:PAGE_SIZE])
    elif mode == "last":
        rows = list(keys.order_by(*OLDEST_FIRST)[:PAGE_SIZE])[::-1]
    else:
        rows = list(keys.order_by(*NEWEST_FIRST)[:PAGE_SIZE])
    # How many keys come before this page, newest first: the page's place in the whole list.
    if mode == "first":
        newer = 0
    elif mode == "last":
        newer = max(total - len(rows), 0)
    elif rows:
        newer = keys.filter(_newer_than(rows[0].created_at, rows[0].pk)).count()
    else:  # nothing older than the cursor: every key is newer; nothing newer: none is
        newer = total if mode == "before" else 0
    base = urlencode({k: v for k, v in filters.items() if v})
    query, link = ("?" + base, f"?{base}&") if base else ("", "?")
    has_newer, has_older = newer > 0, bool(rows) and newer + len(rows) < total
    return {
        "keys": rows,
        "first_page": mode == "first",
        "page_notice": notice,
        "total": total,
        "start": newer + 1 if rows else 0,
        "end": newer + len(rows),
        "has_newer": has_newer,
        "has_older": has_older,
        "pager": {
            "first": query,
            "newer": f"{link}after={rows[0].pk}" if has_newer and rows else "",
            "older": f"{link}before={rows[-1].pk}" if has_older else "",
            "oldest": f"{link}last=1" if has_older else "",
        },
    }


def unsettled(issuances: QuerySet, first_page: bool) -> dict:
    """Unsettled issuances head the first page; past UNKNOWN_LIMIT the page says how many there are."""
    shown = list(issuances.select_related("actor").order_by(*NEWEST_FIRST)[: UNKNOWN_LIMIT + 1]) if first_page else []
    total = issuances.count() if len(shown) > UNKNOWN_LIMIT else len(shown)
    return {"unknown": shown[:UNKNOWN_LIMIT], "unknown_total": total}


def failed_revocations(keys: QuerySet) -> QuerySet:
    """Keys still active because revoking them in Requesty failed (offboarding, idle keys):
    `reconcile_keys` retries them; admins see them above All keys and can filter the list by them."""
    return keys.filter(status=IssuedKey.Status.ACTIVE, revocation_failed_at__isnull=False)


def revocation_failures() -> tuple[list[IssuedKey], int]:
    """All keys' alert: the FAILURES_LISTED keys whose revocation failed first, and how many there
    are (counted only when there are more): the page costs the same however many failed."""
    keys = failed_revocations(IssuedKey.objects.select_related("owner")).order_by("revocation_failed_at", "pk")
    listed = list(keys[: FAILURES_LISTED + 1])
    total = keys.count() if len(listed) > FAILURES_LISTED else len(listed)
    return listed[:FAILURES_LISTED], total


def show(keys: Iterable[IssuedKey], *, new_pk: int | None = None) -> None:
    """What a row of the list shows (the `row` partial of keys/list.html, also the row a revocation
    swaps in), worked out once a page in plain Python: done by the template cell by cell (five URL
    reversals, two date formats, a money format, a label lookup and two comparisons with the new key
    a row) it was most of the page's time. Links to the key's page and its spend (`detail_url`,
    `spend_url`; the key page shows the same spend cell), "Revoke" (`revoke_url`), the creation
    time in UTC (`created_iso` for `datetime`, to the minute on screen), the limit (`limit_text`),
    the status's label and whether it is the key just created (`is_new`). The template still
    escapes every value."""
    detail, spend, revoke = route("keys:detail"), route("keys:spend"), route("keys:revoke")
    for key in keys:
        created = key.created_at.astimezone(UTC)
        key.detail_url, key.spend_url, key.revoke_url = detail(key.pk), spend(key.pk), revoke(key.pk)
        key.created_iso, key.created_text = created.isoformat(), created.strftime("%Y-%m-%d %H:%M")
        key.limit_text = usd(key.monthly_limit) if key.monthly_limit else "No cap"
        key.status_label = STATUS_LABELS.get(key.status, key.status)
        key.is_new = new_pk is not None and key.pk == new_pk
