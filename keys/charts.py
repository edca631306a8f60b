"""Usage over time as a server-rendered SVG bar chart: no JavaScript, no CDN, fine under the CSP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .models import IssuedKey
from .usage import key_usage_points

DAYS = 30
WIDTH, HEIGHT, GAP = 600, 200, 2
# The plot inside the picture: room on the left for the dollar axis, below for the dates.
LEFT, TOP, BOTTOM = 64, 10, 170


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
    bar = (WIDTH - LEFT) / DAYS
    plot = BOTTOM - TOP
    for index, d in enumerate(days):
        height = int(d["spend"] / scale * plot)
        d.update(x=round(LEFT + index * bar, 1), width=round(bar - GAP, 1), height=height, y=BOTTOM - height)
    # Axis labels: $0, half and the peak on the left; the first, middle and last day below.
    y_ticks = [{"value": peak * part / 2, "y": BOTTOM - int(plot * part / 2)} for part in (0, 1, 2)] if peak else []
    x_ticks = [  # anchored so that the first and last labels stay inside the picture
        {"label": _short(days[i]["day"]), "x": round(LEFT + i * bar + offset * (bar - GAP), 1), "anchor": anchor}
        for i, offset, anchor in ((0, 0, "start"), (DAYS // 2, 0.5, "middle"), (DAYS - 1, 1, "end"))
    ]
    return {
        "y_ticks": y_ticks,
        "x_ticks": x_ticks,
        "left": LEFT,
        "bottom": BOTTOM,
        "top": TOP,
        "days": days,
        "peak": peak,
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


def _short(day: str) -> str:
    """ "2026-11-03" as "3 Nov": short enough for an axis label, unambiguous in any locale."""
    return f"{int(day[8:])} {datetime.fromisoformat(day).strftime('%b')}"
