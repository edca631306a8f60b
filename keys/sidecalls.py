"""Requesty calls sent from a pool thread while the request thread makes another one.

A mint makes two calls after the create (the expiry and the labels: Requesty takes neither at
creation, docs/requesty-api.md). Neither needs the other's answer, so one is sent from here while
the request thread sends the other, and a mint waits for two Requesty latencies instead of three.

Only the HTTP call runs in the pool thread: no database access (Django's connections are per
thread, and a test's transaction is not visible from another one), no audit append and never the
new key's secret. The caller records the outcome in its own thread. The pool is bounded: when
every thread is busy the call is not queued but made in the caller's thread when its outcome is
asked for, one after the other as before. Each call keeps the client's own timeouts and deadline
(keys/requesty.py); waiting for it is bounded by the same deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings

from . import requesty

# One per request thread of a worker (GUNICORN_THREADS, 16 by default; 32 in the 2 x 32 layout
# docs/performance.md compares): every mint in flight can have its side call, and no more
# threads than that are ever made.
THREADS = 32
_pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="requesty-side")
_free = threading.BoundedSemaphore(THREADS)
# Beyond the call's own deadline (connect + read timeouts, enforced in the pool thread), how long
# the caller may wait for the thread to report: scheduling, never Requesty.
GRACE_SECONDS = 1.0


def attempt(call: Callable[[], object]) -> Exception | None:
    """Run `call` and return what it raised (None: it succeeded), for the caller to record."""
    try:
        call()
    except Exception as exc:  # handed back as a value: the caller re-raises what it does not expect
        return exc
    return None


class Pending:
    """A call started by `start`; `outcome()` is what `attempt` would have returned."""

    def __init__(self, call: Callable[[], object], future: Future | None):
        self._call, self._future = call, future

    @property
    def in_pool(self) -> bool:
        return self._future is not None

    def outcome(self) -> Exception | None:
        if self._future is None:  # no free thread: made here, now
            return attempt(self._call)
        deadline = settings.REQUESTY_CONNECT_TIMEOUT + settings.REQUESTY_READ_TIMEOUT + GRACE_SECONDS
        try:
            return self._future.result(timeout=deadline)
        except FutureTimeout:  # it was sent and may still act: not a definite "no"
            return requesty.Unavailable("Requesty did not answer in time.")


def start(call: Callable[[], object]) -> Pending:
    """Start `call` (a Requesty call that needs no database and holds no secret) in a pool thread
    if one is free; otherwise it runs in this thread when `outcome()` is asked for."""
    if not _free.acquire(blocking=False):
        return Pending(call, None)
    try:
        future = _pool.submit(_run, call)
    except RuntimeError:  # the interpreter is shutting down: no new threads
        _free.release()
        return Pending(call, None)
    return Pending(call, future)


def _run(call: Callable[[], object]) -> Exception | None:
    try:
        return attempt(call)
    finally:
        _free.release()
