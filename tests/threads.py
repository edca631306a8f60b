"""Running code in several threads at once, as several workers or portal instances would: the one
parallel runner of the tests (PostgreSQL races; the SQLite test database is one in-memory database
that answers concurrent writers with "table is locked")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread (so on its own database connection), all released at the
    same moment; wait for all. Their results, in the order of `calls`; the first exception a call
    raised is raised here, after every thread ended."""
    gate = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            gate.wait()
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the calling thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
