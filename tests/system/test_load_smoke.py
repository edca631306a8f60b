"""bench/load.py, short: a few users for a few seconds with a high fault rate, judged by the same
checks as the full run (the invariant, no 500s, no duplicate mints, no leak), never by timings.
The Requesty read timeout is short, so the "read timeout after creating" fault costs a second."""

from __future__ import annotations

import pytest

from bench import load

pytestmark = pytest.mark.postgres


def test_load_smoke_keeps_the_invariant():
    args = load.parse_args(
        ["--users", "5", "--duration", "5", "--fault-rate", "0.2", "--double-submit", "0.2", "--seed", "7"]
        + ["--read-timeout", "1"]
    )
    report = load.run(args)

    assert report["invariant"] == []
    assert report["server_errors"] == []
    assert report["leaks"] == []
    assert report["unexpected_outcomes"] == {}
    assert report["reconcile"]["exit"] == 0
    assert report["ok"]
    # It really did something: keys were shown and revoked, faults were injected, forms double-posted.
    steps = report["steps"]
    assert steps["mint"]["outcomes"].get("ok", 0) > 0
    assert steps["revoke"]["outcomes"].get("ok", 0) > 0
    assert any(name.startswith("create: ") for name in report["faults_injected"])
    assert report["window"]["double_submits"] > 0
    assert set(report["states_after_reconcile"]) <= {"issued", "rejected", "compensated", "absent"}
