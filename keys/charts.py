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
    peak = max(d["spend"] for d in days)
    scale = peak or Decimal(1)
    bar = WIDTH / DAYS
    for index, d in enumerate(days):
        height = int(d["spend"] / scale * (HEIGHT - 20))
        d.update(x=round(index * bar, 1), width=round(bar - GAP, 1), height=height, y=HEIGHT - height)
    return {
        "days": days,
        "peak": peak,
        "total_spend": sum((d["spend"] for d in days), Decimal(0)),
        "total_requests": sum(d["requests"] for d in days),
        "width": WIDTH,
        "height": HEIGHT,
        "first": days[0]["day"],
        "last": days[-1]["day"],
    }
