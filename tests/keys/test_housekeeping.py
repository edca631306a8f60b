"""manage.py housekeeping: due jobs run once, failures are reported without stopping the others,
and several instances at once do each job once. Time is moved with time-machine, never slept."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

from keys import housekeeping
from keys.housekeeping import Job
from keys.models import HousekeepingJob
from tests.threads import run_together


def run(*args) -> str:
    out = StringIO()
    call_command("housekeeping", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_reconcile_runs_when_due_and_not_before(db, standin, settings):
    settings.PORTAL_RECONCILE_MINUTES = 15
    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert "reconcile: done" in run("--only", "reconcile")
        calls = len(standin.calls)
        assert calls >= 1
        clock.shift(timedelta(minutes=14))
        assert "reconcile: not due" in run("--only", "reconcile")
        assert len(standin.calls) == calls  # no Requesty call for work that is not due
        clock.shift(timedelta(minutes=1))
        assert "reconcile: done" in run("--only", "reconcile")
        assert len(standin.calls) == 2 * calls


def test_a_failing_job_is_reported_the_others_run_and_the_command_fails(db, monkeypatch):
    ran = []

    def boom(now):
        raise RuntimeError("upstream on fire")

    monkeypatch.setattr(
        housekeeping, "jobs", lambda: [Job("first", boom), Job("second", lambda now: ran.append(now) or "ok")]
    )  # "first" is due again at once after failing, though its interval has not passed (below)
    out = StringIO()
    with pytest.raises(CommandError, match="1 job"):
        call_command("housekeeping", stdout=out, stderr=out)
    assert "first: failed — RuntimeError: upstream on fire" in out.getvalue()
    assert "second: done — ok" in out.getvalue()
    assert len(ran) == 1
    row = HousekeepingJob.objects.get(name="first")
    assert row.last_error.startswith("RuntimeError") and row.lease_until is None
    # A failed job is retried on the next run even if its interval has not passed.
    monkeypatch.setattr(housekeeping, "jobs", lambda: [Job("first", lambda now: "fine", lambda: timedelta(hours=1))])
    assert "first: done — fine" in run()
    assert HousekeepingJob.objects.get(name="first").last_error == ""


def test_a_job_leased_by_another_instance_is_skipped_until_the_lease_ends(db, monkeypatch):
    calls = []
    monkeypatch.setattr(housekeeping, "jobs", lambda: [Job("j", lambda now: calls.append(now) or "ran")])
    now = timezone.now()
    HousekeepingJob.objects.create(name="j", lease_until=now + timedelta(minutes=5))
    assert "j: running elsewhere" in run()
    assert calls == []
    with time_machine.travel(now + housekeeping.LEASE, tick=False):
        assert "j: done" in run()  # a crashed instance's lease runs out
    assert len(calls) == 1


def test_unknown_job_and_bad_loop_are_refused(db):
    with pytest.raises(CommandError, match="Unknown job"):
        run("--only", "nope")
    with pytest.raises(CommandError, match="at least 1 second"):
        run("--loop", "0")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_instances_running_at_once_do_each_job_once(monkeypatch):
    done = []
    monkeypatch.setattr(
        housekeeping,
        "jobs",
        lambda: [Job("a", lambda now: done.append("a") or ""), Job("b", lambda now: done.append("b") or "")],
    )
    run_together(*[housekeeping.run_once] * 4)
    assert sorted(done) == ["a", "b"]
