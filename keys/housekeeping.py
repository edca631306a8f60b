"""`manage.py housekeeping`: every piece of scheduled work, run once per call.

Each job is a function `run(now) -> str` (a one-line summary) with how often it is due. A job is
claimed through a lease on its `HousekeepingJob` row (one conditional UPDATE, so it works the same
on SQLite and PostgreSQL): when several instances run at once, each due job runs in exactly one of
them and the others report it as running elsewhere. A job that raises is reported and the others
still run; the command then exits non-zero. Jobs must themselves be idempotent (a reminder or
alert is recorded before or with its sending), because a lease can expire under a very slow job.

Time comes from `django.utils.timezone.now()` only, so tests drive it with time-machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import HousekeepingJob

log = logging.getLogger(__name__)
MIN_INTERVAL = timedelta(seconds=30)
LEASE = timedelta(minutes=10)  # longer than any job should take; a crashed run frees it after this


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[datetime], str]
    # How often the job is due. The default suits cron every minute: instances started in the same
    # minute run it once between them, and the next minute's run finds it due again.
    every: Callable[[], timedelta] = lambda: MIN_INTERVAL


@dataclass
class Outcome:
    job: str
    status: str  # "done", "failed", "not due", "running elsewhere"
    summary: str = ""


def _reconcile(now: datetime) -> str:
    from .reconcile import ListFailed, reconcile

    try:
        report = reconcile(dry_run=False, stale_after=timedelta(minutes=10))
    except ListFailed as exc:
        raise RuntimeError(str(exc)) from None
    if report is None:
        return "another reconciliation was running"
    return "; ".join(report.lines())


def _labels(now: datetime) -> str:
    from .labels import label_due

    return label_due().summary()


def _spend_history(now: datetime) -> str:
    from .spend import remember
    from .usage import org_usage

    org = org_usage()
    if not org.ok:
        raise RuntimeError(org.error)
    return remember(org)


def _budget_alerts(now: datetime) -> str:
    from .alerts import check

    return check(now)


def _idle_keys(now: datetime) -> str:
    from .idle import check

    return check(now)


def _expiry(now: datetime) -> str:
    from .expiry import run_due

    return run_due(now)


def _reminders(now: datetime) -> str:
    from .reminders import run

    return run(now)


def jobs() -> list[Job]:
    """The jobs, in the order they run."""
    return [
        Job("expiry", _expiry),  # end due keys, retry expiries Requesty has not confirmed
        Job("reminders", _reminders),
        Job("reconcile", _reconcile, lambda: timedelta(minutes=settings.PORTAL_RECONCILE_MINUTES)),
        Job("labels", _labels, lambda: timedelta(minutes=5)),
        # The three below share one cached organization usage call (keys/usage.py).
        Job("spend_history", _spend_history, lambda: timedelta(hours=1)),
        Job(
            "budget_alerts",
            _budget_alerts,
            lambda: max(MIN_INTERVAL, timedelta(seconds=settings.PORTAL_SPEND_CACHE_SECONDS)),
        ),
        Job("idle_keys", _idle_keys, lambda: timedelta(hours=1)),
    ]


def _claim(job: Job, now: datetime) -> str | None:
    """Take the job's lease if it is due and free. Returns None when claimed, else the reason."""
    HousekeepingJob.objects.get_or_create(name=job.name)
    due_before = now - job.every()
    claimed = (
        HousekeepingJob.objects.filter(name=job.name)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .filter(Q(last_succeeded__isnull=True) | Q(last_succeeded__lte=due_before) | Q(last_error__gt=""))
        .update(lease_until=now + LEASE, last_started=now)
    )
    if claimed:
        return None
    row = HousekeepingJob.objects.get(name=job.name)
    return "running elsewhere" if row.lease_until and row.lease_until > now else "not due"


def run_once(only: list[str] | None = None) -> list[Outcome]:
    outcomes = []
    for job in jobs():
        if only and job.name not in only:
            continue
        now = timezone.now()
        reason = _claim(job, now)
        if reason:
            outcomes.append(Outcome(job.name, reason))
            continue
        try:
            summary = job.run(now)
        except Exception as exc:  # one job's failure must not stop the others
            log.exception("housekeeping job %s failed", job.name)
            error = f"{type(exc).__name__}: {exc}"[:300]
            HousekeepingJob.objects.filter(name=job.name).update(lease_until=None, last_error=error)
            outcomes.append(Outcome(job.name, "failed", error))
            continue
        HousekeepingJob.objects.filter(name=job.name).update(lease_until=None, last_succeeded=now, last_error="")
        outcomes.append(Outcome(job.name, "done", summary))
    return outcomes
