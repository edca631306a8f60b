#!/usr/bin/env python
"""Benchmark the spend views: "My keys" with --my-keys keys (200) and /spend/ with --org-keys keys
(1,000), server time against a bare login-required view, and Requesty calls per page view.

A measurement, not a test. Set-up as bench/audit.py's pages part (tests/system/harness.py, 127.0.0.1):
a throw-away PostgreSQL database beside --database-url, migrated; the portal's production settings
in this process with a ``floor/`` view; an in-process stand-in Requesty (recorded usage: each key
spent on three days this month) whose requests are counted. The first view of each page pays the
one organization usage call of its cache period (timed separately as "cold"); the timed views
after it are warm, as nearly every view is with PORTAL_SPEND_CACHE_SECONDS=60.

    .venv/bin/python bench/spend.py [--my-keys 200] [--org-keys 1000] [--requests 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import load_average, log, run_script  # noqa: E402
from bench.audit import setup_django  # noqa: E402
from standin import StandIn  # noqa: E402
from tests.system import harness  # noqa: E402

REQUESTER, ADMIN = "bench-requester", "bench-admin"


def seed(standin: StandIn, my_keys: int, org_keys: int) -> None:
    """--my-keys keys of the requester, the rest of --org-keys spread over 100 others, each in the
    stand-in with spend on three days of this month."""
    from django.contrib.auth.models import User

    from keys.models import Issuance, IssuedKey

    requester = User.objects.get(username=REQUESTER)
    others = [User.objects.create_user(f"bench-user{i:03d}", f"u{i}@example.com") for i in range(100)]
    today = datetime.now(UTC).date()
    days = [
        (today - timedelta(days=d)).isoformat() for d in range(3) if (today - timedelta(days=d)).month == today.month
    ]
    issuances, keys = [], []
    for i in range(org_keys):
        owner = requester if i < my_keys else others[i % 100]
        upstream = standin.add_key(f"k{i:04d}", Decimal(50))
        for day in days:
            standin.record_usage(upstream["id"], day, Decimal("1.25"), 10)
        issuance = Issuance(
            nonce=uuid.uuid4().hex, actor=owner, name=f"k{i:04d}", monthly_limit=50, manage="none",
            completions="write", state="issued", api_key_id=upstream["id"],
        )  # fmt: skip
        issuances.append(issuance)
        keys.append(
            IssuedKey(api_key_id=upstream["id"], issuance=issuance, owner=owner, name=issuance.name, monthly_limit=50)
        )
    Issuance.objects.bulk_create(issuances)
    IssuedKey.objects.bulk_create(keys)


def measure(pages: list[tuple[str, str, object]], standin: StandIn, requests: int) -> list[dict]:
    from django.core.cache import cache

    results = []
    for name, path, client in pages:
        cache.clear()
        before = len(standin.calls)
        started = time.perf_counter()
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}")
        if b"could not be loaded" in response.content:
            raise RuntimeError(f"{path}: the organization usage call failed")
        cold_ms = (time.perf_counter() - started) * 1000
        cold_calls = len(standin.calls) - before
        times, before = [], len(standin.calls)
        for _ in range(requests):
            started = time.perf_counter()
            assert client.get(path).status_code == 200, path
            times.append((time.perf_counter() - started) * 1000)
        warm_calls = (len(standin.calls) - before) / requests
        results.append(
            {
                "name": name,
                "cold_ms": round(cold_ms, 1),
                "cold_calls": cold_calls,
                "p50_ms": round(statistics.median(times), 2),
                "calls_per_view": warm_calls,
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--my-keys", type=int, default=200)
    parser.add_argument("--org-keys", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--database-url", default=harness.admin_database_url())
    args = parser.parse_args(argv)
    standin = StandIn(admin_token=harness.TOKEN, fake_usage=False)
    with harness.System(
        standin=standin, db_name="bench_spend", admin_url=args.database_url, LOG_LEVEL="WARNING"
    ) as system:
        system.start(users=[REQUESTER], admins=[ADMIN], serve=False)
        setup_django(system.base_env)
        from django.contrib.auth.models import User
        from django.db import connections
        from django.test import Client

        system.stack.callback(connections.close_all)
        log(f"seeding {args.org_keys} keys ({args.my_keys} of {REQUESTER})")
        seed(standin, args.my_keys, args.org_keys)
        requester, admin = Client(), Client()
        requester.force_login(User.objects.get(username=REQUESTER))
        admin.force_login(User.objects.get(username=ADMIN))
        pages = [
            ("floor (requester)", "/floor/", requester),
            (f"My keys /keys/ ({args.my_keys} keys, 50 a page)", "/keys/", requester),
            ("floor (admin)", "/floor/", admin),
            (f"/spend/ ({args.org_keys} keys)", "/spend/", admin),
        ]
        results = measure(pages, standin, args.requests)
    floors = {}
    print(f"load average at end: {load_average()}")
    print(f"{'page':48} {'p50 ms':>8} {'x floor':>8} {'cold ms':>8} {'calls cold':>10} {'calls/view':>10}")
    for r in results:
        floor = floors.setdefault(r["name"], r["p50_ms"]) if r["name"].startswith("floor") else None
        base = floor or list(floors.values())[-1]
        print(
            f"{r['name']:48} {r['p50_ms']:8.2f} {r['p50_ms'] / base:8.1f} {r['cold_ms']:8.1f} "
            f"{r['cold_calls']:10d} {r['calls_per_view']:10.2f}"
        )
    return 0


if __name__ == "__main__":
    run_script(main)
