"""Usage figures: the periods a usage query asks for (checked as Requesty checks them), made-up but
deterministic figures (the sandbox's charts), figures from what tests recorded, and the
organization's usage per period.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from .protocol import ApiError, timestamp


def usage_query(query: str) -> tuple[list[str], str, list[str]]:
    """The periods, resolution and group_by of a usage query, checked as Requesty checks them."""
    parsed = parse_qs(query)
    params = {k: v[-1] for k, v in parsed.items()}
    if "start" not in params:
        raise ApiError(400, "start is required")
    start = timestamp(params["start"], "start")
    end = timestamp(params["end"], "end") if "end" in params else start + timedelta(days=1)
    if end <= start or end - start > timedelta(days=100):
        raise ApiError(400, "end must be after start and within 100 days")
    resolution = params.get("resolution", "day")
    if resolution not in ("hour", "day", "month"):
        raise ApiError(400, "resolution must be hour, day or month")
    return _periods(start, end, resolution), resolution, parsed.get("group_by", [])


def _periods(start: datetime, end: datetime, resolution: str) -> list[str]:
    if resolution == "hour":
        cursor, fmt = start.replace(minute=0, second=0, microsecond=0), "%Y-%m-%dT%H:00:00Z"
    elif resolution == "day":
        cursor, fmt = start.replace(hour=0, minute=0, second=0, microsecond=0), "%Y-%m-%d"
    else:
        cursor, fmt = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0), "%Y-%m-%d"
    periods = []
    while cursor < end:
        periods.append(cursor.strftime(fmt))
        if resolution == "hour":
            cursor += timedelta(hours=1)
        elif resolution == "day":
            cursor += timedelta(days=1)
        else:
            cursor = (cursor + timedelta(days=32)).replace(day=1)
    return periods


def fake_figures(key_id: str, period: str) -> dict[str, Any]:
    """Deterministic per (key, period), so tests and screenshots are reproducible."""
    digest = hashlib.sha256(f"{key_id}|{period}".encode()).digest()
    requests = int.from_bytes(digest[:2]) % 500
    input_tokens = requests * (50 + digest[2])
    output_tokens = requests * (20 + digest[3])
    spend = Decimal(input_tokens) * Decimal("0.000001") + Decimal(output_tokens) * Decimal("0.000003")
    return {"total_requests": requests, "spend": spend, "input_tokens": input_tokens, "output_tokens": output_tokens}


def recorded_figures(recorded: dict[str, dict[str, Any]], period: str, resolution: str) -> dict[str, Any]:
    """A period's figures from a key's recorded days (day -> spend and requests); hours hold none."""
    prefix = {"hour": None, "day": period[:10], "month": period[:7]}[resolution]
    spend, requests = Decimal(0), 0
    for day, entry in recorded.items():
        if prefix is not None and day.startswith(prefix):
            spend, requests = spend + entry["spend"], requests + entry["requests"]
    return {"total_requests": requests, "spend": spend, "input_tokens": 0, "output_tokens": 0}


def org_period(rows: list[tuple[str, dict[str, Any]]], group_by: list[str]) -> dict[str, Any]:
    """One period of the organization's usage from each key's figures; with group_by=api_key_id it
    lists every key that had requests (`grouped_data`), money as strings, as Requesty's CLI tests show."""
    rows = [(key_id, figures) for key_id, figures in rows if figures["total_requests"]]
    entry = {
        "total_requests": sum(f["total_requests"] for _, f in rows),
        "spend": str(sum((f["spend"] for _, f in rows), Decimal(0))),
    }
    if "api_key_id" in group_by:
        entry["grouped_data"] = [
            {
                "group_by_values": {"api_key_id": key_id},
                "total_requests": f["total_requests"],
                "spend": str(f["spend"]),
            }
            for key_id, f in rows
        ]
    return entry
