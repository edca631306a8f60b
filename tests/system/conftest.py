"""Fixtures for the system tests: the portal under gunicorn on PostgreSQL (tests/system/harness.py).

They need PostgreSQL: every module here is marked `postgres`, so SQLite runs deselect them
(tests/conftest.py) and the PostgreSQL run of CI runs them. The database is our own
(`reliability_<pid>` beside $DATABASE_URL's), never the one pytest-django uses.
"""

from __future__ import annotations

import pytest

from standin import StandIn

from .harness import TOKEN, System, make_canary

REQUESTER, OTHER, ADMIN = "rel-requester", "rel-other", "rel-admin"


@pytest.fixture(scope="module")
def canary() -> str:
    return make_canary()


@pytest.fixture(scope="module")
def fault_system(canary):
    """One gunicorn instance (more are added by the scenarios that need other settings), the
    in-process stand-in with the control API on, minting `canary` as every secret."""
    standin = StandIn(host="127.0.0.1", port=0, admin_token=TOKEN, control=True)
    standin.secret_factory = lambda: canary
    system = System(standin=standin)
    system.start(users=[REQUESTER, OTHER], admins=[ADMIN])
    yield system
    system.close()
