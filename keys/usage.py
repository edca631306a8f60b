"""What keys cost, from as few Requesty calls as possible, shared by every worker and instance.

The organization's usage per key and day (`requesty.org_usage_by_key`) answers the lists' spend
and "last used", the spend page, budget alerts and idle keys. It is fetched at most once per
PORTAL_SPEND_CACHE_SECONDS for the whole portal: whoever finds the cached answer stale takes a
gate in Django's cache (`cache.add`, which only one caller wins until it expires) and calls; the
others keep using the answer they have, or wait for the first one. The default cache is a table
in the portal's database (portal/settings.py), so the gate holds across processes and hosts.

A key's 30-day chart is cached and gated the same way, per key; on top, one person can make the
portal call Requesty for charts at most CHART_CALLS_PER_PERSON times a minute.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from . import requesty

ORG_KEY = "spend:org-usage"
KEEP_FOR = 24 * 60 * 60  # a stale answer stays usable this long while a refresh is under way
WAIT_STEP = 0.1
CHART_CALLS_PER_PERSON = 10  # uncached chart calls per person per minute
ZERO = Decimal(0)


@dataclass(frozen=True)
class KeyUsage:
    """One key's figures from the organization's usage."""

    month_spend: Decimal = ZERO
    last_month_spend: Decimal = ZERO
    month_requests: int = 0
    last_used: date | None = None


@dataclass(frozen=True)
class OrgUsage:
    """The organization's usage as of `fetched_at`, or why there is none (`error`)."""

    fetched_at: datetime
    today: date
    start: date  # the first day the answer covers
    by_month: dict[str, dict[str, tuple[Decimal, int]]] = field(default_factory=dict)  # "YYYY-MM" -> key -> figures
    last_used: dict[str, date] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def days_covered(self) -> int:
        return (self.today - self.start).days + 1

    @property
    def month(self) -> str:
        return self.today.strftime("%Y-%m")

    @property
    def last_month(self) -> str:
        return previous_month(self.today).strftime("%Y-%m")

    def key(self, api_key_id: str) -> KeyUsage:
        this, last = self.by_month.get(self.month, {}), self.by_month.get(self.last_month, {})
        spend, requests = this.get(api_key_id, (ZERO, 0))
        return KeyUsage(spend, last.get(api_key_id, (ZERO, 0))[0], requests, self.last_used.get(api_key_id))

    def key_ids(self) -> set[str]:
        return set(itertools.chain.from_iterable(self.by_month.values()))


def month_start(day: date) -> date:
    return day.replace(day=1)


def previous_month(day: date) -> date:
    return month_start(month_start(day) - timedelta(days=1))


def window(today: date) -> tuple[date, date]:
    """First and last day asked for: all of last month (the spend page), and PORTAL_IDLE_DAYS back
    (idle keys); under Requesty's 100-day bound since PORTAL_IDLE_DAYS is at most 90."""
    start = min(previous_month(today), today - timedelta(days=settings.PORTAL_IDLE_DAYS))
    return start, today


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def _fetch_org(now: datetime) -> OrgUsage:
    today = now.astimezone(UTC).date()
    start, _ = window(today)
    try:
        days = requesty.org_usage_by_key(_midnight(start), _midnight(today + timedelta(days=1)))
    except requesty.RequestyError as exc:
        return OrgUsage(now, today, start, error=_failure(exc))
    by_month: dict[str, dict[str, tuple[Decimal, int]]] = {}
    last_used: dict[str, date] = {}
    for d in days:
        month = by_month.setdefault(d.day[:7], {})
        spend, requests = month.get(d.api_key_id, (ZERO, 0))
        month[d.api_key_id] = (spend + d.spend, requests + d.requests)
        if d.requests:
            try:
                day = date.fromisoformat(d.day)
            except ValueError:
                continue
            if day > last_used.get(d.api_key_id, date.min):
                last_used[d.api_key_id] = day
    return OrgUsage(now, today, start, by_month, last_used)


def _failure(exc: requesty.RequestyError, what: str = "the organization's usage") -> str:
    """A failed read, said plainly (a read changes nothing, so there is no "unknown outcome")."""
    if isinstance(exc, requesty.AuthFailed):
        return f"The portal is misconfigured and could not read {what} from Requesty; tell the portal admins."
    if isinstance(exc, requesty.RateLimited):
        return f"Requesty is busy and did not send {what}; the portal asks again in a minute."
    if isinstance(exc, requesty.NotSent):
        return f"Requesty could not be reached for {what}; the portal asks again in a minute."
    return f"Requesty did not send {what} ({exc.message}); the portal asks again in a minute."


def org_usage() -> OrgUsage:
    """The organization's usage, at most PORTAL_SPEND_CACHE_SECONDS old (a failed call counts as
    the answer for that time too: no retry storm while Requesty is struggling)."""
    now = timezone.now()
    answer = cached(ORG_KEY, lambda: _fetch_org(now), now=now)
    if answer is None:
        today = now.astimezone(UTC).date()
        return OrgUsage(now, today, window(today)[0], error="Spend figures are still being loaded; reload in a moment.")
    return answer


def cached(name: str, fetch: Callable[[], Any], *, now: datetime, may_call: Callable[[], bool] = lambda: True) -> Any:
    """`fetch()`'s answer from the cache if younger than PORTAL_SPEND_CACHE_SECONDS; else the one
    caller that wins the gate calls it. Others get the previous answer or, when there is none, wait
    for the winner's (None if it takes longer than a Requesty call may). `may_call` can refuse a
    call (a per-person bound): then the previous answer, if any, or None."""
    period = settings.PORTAL_SPEND_CACHE_SECONDS
    entry = cache.get(name)
    if entry is not None and (now - entry[0]).total_seconds() < period:
        return entry[1]
    allowed = may_call()
    if allowed and cache.add(f"{name}:gate", now, timeout=period):
        value = fetch()
        cache.set(name, (now, value), timeout=max(period, KEEP_FOR))
        return value
    if entry is not None or not allowed:
        return entry[1] if entry is not None else None
    # Counted steps rather than a clock: a test's frozen clock must not make this wait for ever.
    steps = int((settings.REQUESTY_CONNECT_TIMEOUT + settings.REQUESTY_READ_TIMEOUT) / WAIT_STEP)
    for _ in range(steps):
        time.sleep(WAIT_STEP)
        entry = cache.get(name)
        if entry is not None:
            return entry[1]
    return None


def attach(keys) -> OrgUsage:
    """Give each key its `usage` (KeyUsage, None when the organization call failed) and `last_used`
    (that, or the day the portal last saw; None if never): what the lists and the key page show."""
    org = org_usage()
    for key in keys:
        key.usage = org.key(key.api_key_id) if org.ok else None
        limit = key.monthly_limit
        key.spend_percent = max(0, min(100, int(key.usage.month_spend * 100 / limit))) if key.usage and limit else 0
        seen = [d for d in (key.usage.last_used if key.usage else None, key.last_used_on) if d]
        key.last_used = max(seen) if seen else None
    return org


# --- A key's 30-day chart -------------------------------------------------------------------------
@dataclass(frozen=True)
class ChartAnswer:
    points: list[requesty.UsagePoint] | None
    error: str = ""


BUSY = (
    "You have looked at the usage of many keys in the last minute; to spare Requesty, the portal "
    "is not asking it for more right now. Try again in a minute."
)


def key_usage_points(api_key_id: str, first: date, last: date, user) -> ChartAnswer:
    """Daily usage of one key, cached per key and day, and bounded per person."""
    now = timezone.now()

    def fetch() -> ChartAnswer:
        try:
            return ChartAnswer(requesty.get_usage(api_key_id, _midnight(first), _midnight(last + timedelta(days=1))))
        except requesty.NotFound:
            return ChartAnswer(None, "This key no longer exists in Requesty.")
        except requesty.RequestyError as exc:
            return ChartAnswer(None, _failure(exc, "this key's usage"))

    answer = cached(f"spend:chart:{api_key_id}:{last}", fetch, now=now, may_call=lambda: _person_may_call(user, now))
    return answer if answer is not None else ChartAnswer(None, BUSY)


def _person_may_call(user, now: datetime) -> bool:
    name = f"spend:chart-calls:{user.pk}:{now:%Y%m%d%H%M}"
    cache.add(name, 0, timeout=120)
    try:
        return cache.incr(name) <= CHART_CALLS_PER_PERSON
    except ValueError:  # expired between add and incr
        return True
