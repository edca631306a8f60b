"""The reliability suite's kill points (keys/faultpoints.py) and the deploy check that keeps them
out of production (keys.W007). The kills themselves are exercised in tests/system/test_faults.py."""

from __future__ import annotations

import signal
import uuid
from decimal import Decimal

import pytest

from keys import checks, faultpoints, minting
from standin import Fault
from tests.test_deploy import PROD, manage


@pytest.fixture
def kills(monkeypatch) -> list[tuple[int, int]]:
    """os.kill as the hook sees it, recorded instead of performed (this is the test process)."""
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(faultpoints.os, "kill", lambda pid, sig: seen.append((pid, sig)))
    return seen


def test_hook_does_nothing_when_unset(monkeypatch, kills):
    monkeypatch.delenv(faultpoints.ENV, raising=False)
    for name in faultpoints.POINTS:
        assert faultpoints.reached(name) is None
    assert kills == []


def test_hook_does_nothing_at_other_points(monkeypatch, kills):
    monkeypatch.setenv(faultpoints.ENV, "after_reply")
    faultpoints.reached("before_upstream")
    faultpoints.reached("after_commit")
    faultpoints.reached("")
    assert kills == []


def test_hook_kills_its_own_process_at_the_named_point(monkeypatch, kills):
    monkeypatch.setenv(faultpoints.ENV, "after_reply")
    faultpoints.reached("after_reply")
    assert kills == [(faultpoints.os.getpid(), signal.SIGKILL)]


def test_variable_is_read_at_call_time(monkeypatch, kills):
    monkeypatch.delenv(faultpoints.ENV, raising=False)
    faultpoints.reached("after_commit")
    monkeypatch.setenv(faultpoints.ENV, "after_commit")
    faultpoints.reached("after_commit")
    assert len(kills) == 1


def _cleaned(name: str) -> dict:
    return {"name": name, "monthly_limit": Decimal(5), "manage": "none", "completions": "write"}


@pytest.mark.django_db
def test_mint_flow_passes_the_points_in_order(monkeypatch, requester, standin):
    """Where the hooks sit: a successful mint passes all three in order; a definite "no" from
    Requesty passes only the first (nothing after the reply is reached)."""
    passed: list[str] = []
    monkeypatch.setattr(minting, "reached", passed.append)
    minting.mint_key(actor=requester, cleaned=_cleaned("ok"), nonce=uuid.uuid4().hex, source_ip=None)
    assert passed == ["before_upstream", "after_reply", "after_commit"]

    passed.clear()
    standin.inject(Fault.status(400), "POST", "/v1/manage/apikey")
    with pytest.raises(minting.MintError):
        minting.mint_key(actor=requester, cleaned=_cleaned("no"), nonce=uuid.uuid4().hex, source_ip=None)
    assert passed == ["before_upstream"]


def test_check_warns_while_the_variable_is_set_in_production(monkeypatch, settings):
    settings.DEBUG, settings.PORTAL_SANDBOX = False, False
    monkeypatch.delenv(faultpoints.ENV, raising=False)
    assert checks.reliability_kill_points(None) == []
    monkeypatch.setenv(faultpoints.ENV, "before_upstream")
    assert [w.id for w in checks.reliability_kill_points(None)] == ["keys.W007"]
    settings.DEBUG = True  # a developer's machine: not a deploy concern
    assert checks.reliability_kill_points(None) == []


def test_check_deploy_fails_with_the_variable_set():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PROD, PORTAL_TEST_KILL_AT="after_commit")
    assert result.returncode != 0 and "keys.W007" in result.stdout + result.stderr
