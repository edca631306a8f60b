"""Helpers every benchmark script shares: progress output, percentiles, a free port, an HTTP client."""

from __future__ import annotations

import socket
import sys

import requests


def log(message: str, tag: str = "bench") -> None:
    """Progress goes to stderr; the report goes to stdout."""
    print(f"[{tag}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(seconds: list[float], digits: int = 2) -> dict:
    """Durations given in seconds, summarised in milliseconds, rounded for printing and JSON."""
    ms = [s * 1000 for s in seconds]

    def r(v):
        return None if v is None else round(v, digits)

    return {
        "n": len(ms),
        "p50_ms": r(percentile(ms, 50)),
        "p95_ms": r(percentile(ms, 95)),
        "p99_ms": r(percentile(ms, 99)),
        "mean_ms": r(sum(ms) / len(ms)) if ms else None,
        "min_ms": r(min(ms)) if ms else None,
        "max_ms": r(max(ms)) if ms else None,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_client() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route loopback traffic through a proxy from the environment
    return session
