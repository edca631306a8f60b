"""Fixtures for the system tests: the portal under gunicorn on PostgreSQL (tests/system/harness.py).

They need PostgreSQL: every module here is marked `postgres`, so SQLite runs deselect them
(tests/conftest.py) and the PostgreSQL run of CI runs them. The database is our own
(`reliability_<pid>` beside $DATABASE_URL's), never the one pytest-django uses.

One system serves every fault module (test_faults_*.py): its database, stand-in and log build up
across them, and each scenario's closing check (scenarios.settle) covers everything before it.
"""

from __future__ import annotations

import pytest

from standin import StandIn

from .browser import Client
from .checks import make_canary
from .harness import TOKEN, System

REQUESTER, OTHER, ADMIN = "rel-requester", "rel-other", "rel-admin"


@pytest.fixture(scope="session")
def canary() -> str:
    return make_canary()


@pytest.fixture(scope="session")
def fault_system(canary):
    """One gunicorn instance (more are added by the scenarios that need other settings), the
    in-process stand-in with the control API on, minting `canary` as every secret."""
    standin = StandIn(host="127.0.0.1", port=0, admin_token=TOKEN, control=True)
    standin.secret_factory = lambda: canary
    system = System(standin=standin)
    system.start(users=[REQUESTER, OTHER], admins=[ADMIN])
    yield system
    system.close()


@pytest.fixture(scope="session")
def user(fault_system) -> Client:
    return Client(fault_system.portal.base_url).sign_in(REQUESTER)


@pytest.fixture(scope="session")
def admin(fault_system) -> Client:
    client = Client(fault_system.portal.base_url).sign_in(ADMIN)
    client.pages += ("/audit/",)
    return client


@pytest.fixture
def system(fault_system):
    """The shared system; a scenario that leaves an injected fault unused fails, and the fault is
    dropped so the next scenario starts clean. Each scenario judges only the log lines it caused."""
    fault_system.new_log_text()
    yield fault_system
    standin = fault_system.standin
    with standin._lock:
        leftover = list(standin._faults)
        standin._faults.clear()
    assert leftover == [], f"injected faults never used: {leftover}"
