"""The spend page's figures: this month and last, by team, person and key, keys near their limit and a
six-month trend, all from the cached organization usage (keys/usage.py) and the finished months
the portal kept (`SpendMonth`); never a call per key."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from .labels import teams
from .models import IssuedKey, SpendMonth
from .usage import ZERO, OrgUsage, month_start, previous_month

NEAR_LIMIT = 80  # percent: "keys at or above 80% of their limit"
TREND_MONTHS = 6
NO_TEAM = "(no team)"
OUTSIDE = "(not from the portal)"


@dataclass
class Row:
    """One Requesty key with spend this month or last."""

    api_key_id: str
    name: str
    owner: str
    team: str
    status: str
    limit: Decimal | None
    this_month: Decimal
    last_month: Decimal
    last_used: date | None
    pk: int | None = None

    @property
    def percent(self) -> int | None:
        return int(self.this_month * 100 / self.limit) if self.limit else None


def _team_by_key(api_key_ids) -> dict[str, tuple[IssuedKey, str]]:
    keys = list(IssuedKey.objects.filter(api_key_id__in=list(api_key_ids)).select_related("owner"))
    team_of = teams({k.owner_id for k in keys if k.owner_id})
    return {k.api_key_id: (k, team_of.get(k.owner_id, NO_TEAM)) for k in keys}


def rows(org: OrgUsage) -> list[Row]:
    """Every key with spend this month or last, highest spend this month first."""
    known = _team_by_key(org.key_ids())
    found = []
    for api_key_id in org.key_ids():
        figures = org.key(api_key_id)
        key, team = known.get(api_key_id, (None, OUTSIDE))
        found.append(
            Row(
                api_key_id=api_key_id,
                name=key.name if key else "",
                owner=(key.owner.get_username() if key.owner else "deleted user") if key else "",
                team=team,
                status=key.get_status_display() if key else "",
                limit=key.monthly_limit if key else None,
                this_month=figures.month_spend,
                last_month=figures.last_month_spend,
                last_used=figures.last_used,
                pk=key.pk if key else None,
            )
        )
    return sorted(found, key=lambda r: (-r.this_month, -r.last_month, r.name))


def team_names() -> list[str]:
    from django.contrib.auth.models import Group

    return [
        *Group.objects.filter(spending_policy__isnull=False).order_by("name").values_list("name", flat=True),
        NO_TEAM,
    ]


def summary(org: OrgUsage, team: str = "") -> dict:
    all_rows = rows(org)
    shown = [r for r in all_rows if r.team == team] if team else all_rows
    by_team: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    by_person: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for r in shown:
        by_team[r.team][0] += r.this_month
        by_team[r.team][1] += r.last_month
        if r.owner:
            by_person[(r.owner, r.team)][0] += r.this_month
            by_person[(r.owner, r.team)][1] += r.last_month
    return {
        "rows": shown,
        "this_month": sum((r.this_month for r in shown), ZERO),
        "last_month": sum((r.last_month for r in shown), ZERO),
        "by_team": sorted(((t, *v) for t, v in by_team.items()), key=lambda x: -x[1]),
        "by_person": sorted(((p, t, *v) for (p, t), v in by_person.items()), key=lambda x: -x[2]),
        "near_limit": [r for r in shown if r.percent is not None and r.percent >= NEAR_LIMIT and r.status == "active"],
        "trend": trend(org, {r.api_key_id for r in all_rows if r.team == team} if team else None, team),
    }


def trend(org: OrgUsage, only: set[str] | None, team: str) -> list[tuple[str, Decimal]]:
    """Spend per month for the last six months (this one so far): the usage answer's months, and the
    finished months the portal kept before that."""
    months, cursor = [], month_start(org.today)
    for _ in range(TREND_MONTHS):
        months.append(cursor)
        cursor = previous_month(cursor)
    months.reverse()
    live = {
        m: org.by_month[m.strftime("%Y-%m")] for m in months if m >= org.start and m.strftime("%Y-%m") in org.by_month
    }
    kept: dict[date, dict[str, Decimal]] = defaultdict(dict)
    for m, api_key_id, spend in SpendMonth.objects.filter(month__in=[m for m in months if m not in live]).values_list(
        "month", "api_key_id", "spend"
    ):
        kept[m][api_key_id] = spend
    if team:  # keys of earlier months may no longer spend: find their team too
        older = {k for figures in kept.values() for k in figures}
        only = (only or set()) | {k for k, (_, t) in _team_by_key(older).items() if t == team}
    result = []
    for m in months:
        figures = {k: v[0] for k, v in live[m].items()} if m in live else kept.get(m, {})
        result.append((m.strftime("%Y-%m"), sum((v for k, v in figures.items() if only is None or k in only), ZERO)))
    return result


def remember(org: OrgUsage) -> str:
    """Keep what the organization usage shows beyond its 100-day reach: each key's last day with
    requests (`last_used_on`), and finished months' spend (`SpendMonth`, for the trend)."""
    moved = 0
    known = dict(IssuedKey.objects.exclude(last_used_on=None).values_list("api_key_id", "last_used_on"))
    for api_key_id, day in org.last_used.items():
        if known.get(api_key_id) is None or known[api_key_id] < day:
            moved += IssuedKey.objects.filter(api_key_id=api_key_id).update(last_used_on=day)
    finished = [m for m in org.by_month if f"{m}-01" >= org.start.isoformat() and m < org.month]
    kept = [
        SpendMonth(month=date.fromisoformat(f"{m}-01"), api_key_id=key_id, spend=spend, requests=requests)
        for m in finished
        for key_id, (spend, requests) in org.by_month[m].items()
    ]
    SpendMonth.objects.bulk_create(
        kept, update_conflicts=True, unique_fields=["month", "api_key_id"], update_fields=["spend", "requests"]
    )
    return f"last used moved for {moved} key(s); {len(kept)} month figure(s) kept"
