"""Usage over time as a server-rendered SVG bar chart: no JavaScript, no CDN, fine under the CSP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .models import IssuedKey
from .usage import key_usage_points

DAYS = 30
WIDTH, HEIGHT, GAP = 600, 160, 2


def usage_chart(key: IssuedKey, user, today=None) -> tuple[dict | None, str]:
    """Daily spend and requests for the last 30 days (missing days are zero), with bar geometry;
    or None and why not. From Requesty through the cache (keys/usage.py)."""
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=DAYS - 1)
    answer = key_usage_points(key.api_key_id, first, today, user)
    if answer.points is None:
        return None, answer.error
    return _chart(answer.points, first), ""


def _chart(points, first) -> dict:
    by_day = {p.period: p for p in points}
    days = []
    for offset in range(DAYS):
        day = (first + timedelta(days=offset)).isoformat()
        point = by_day.get(day)
        days.append(
            {"day": day, "spend": point.spend if point else Decimal(0), "requests": point.requests if point else 0}
        )
    return {
        "days": bars(days),
        "peak": max(d["spend"] for d in days),
        "total_spend": sum((d["spend"] for d in days), Decimal(0)),
        "total_requests": sum(d["requests"] for d in days),
        "width": WIDTH,
        "height": HEIGHT,
        "first": days[0]["day"],
        "last": days[-1]["day"],
    }


def bars(items: list[dict]) -> list[dict]:
    """Adds each bar's geometry (x, y, width, height) to items with a "spend", scaled to the highest."""
    scale = max((d["spend"] for d in items), default=0) or Decimal(1)
    bar = WIDTH / max(len(items), 1)
    for index, d in enumerate(items):
        height = int(d["spend"] / scale * (HEIGHT - 20))
        d.update(x=round(index * bar, 1), width=round(bar - GAP, 1), height=height, y=HEIGHT - height)
    return items


def trend_chart(months: list[tuple[str, Decimal]]) -> dict:
    """The spend page's monthly bars (keys/spend.py's trend)."""
    items = bars([{"month": m, "spend": spend} for m, spend in months])
    return {"months": items, "peak": max((d["spend"] for d in items), default=0), "width": WIDTH, "height": HEIGHT}
