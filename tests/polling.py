"""Waiting for a condition, never for a fixed time: the one polling loop of the tests and bench."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], *, timeout: float, interval: float = 0.02, message: str = "") -> None:
    """Poll `condition()` every `interval` seconds until it is true; after `timeout` seconds,
    fail with `message`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"the condition did not hold within {timeout} s")
        time.sleep(interval)
