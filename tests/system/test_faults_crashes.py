"""The portal's own side failing, against the real server (see test_faults_requesty.py for the
set-up): a gunicorn worker SIGKILLed at each point of the mint flow, and the database refusing a
write or going away and coming back. Every scenario ends in scenarios.settle (the invariant, no
500, no leak).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests

from standin import Fault
from tests.keys.helpers import creates
from tests.polling import wait_until

from .browser import shows_secret
from .checks import issuance
from .harness import REQUESTY_READ_TIMEOUT
from .scenarios import CREATE, settle, settle_the_whole_run, upstream_names, wait_until_created

pytestmark = pytest.mark.postgres


# --- a worker killed at each point of the flow ------------------------------------------------------
def _killed_mint(client, name):
    with pytest.raises(requests.ConnectionError):
        client.mint(name)


@pytest.mark.parametrize(
    "point,state,upstream",
    [
        ("before_upstream", "absent", False),
        ("after_reply", "compensated", False),
        ("after_commit", "issued", True),
    ],
)
def test_worker_killed_at_a_kill_point(system, user, canary, point, state, upstream):
    """PORTAL_TEST_KILL_AT (keys/faultpoints.py) on a second instance: the worker SIGKILLs itself."""
    portal = system.add_portal(f"kill-{point}", PORTAL_TEST_KILL_AT=point)
    name = f"killed-{point}"
    try:
        workers = portal.workers()
        creates_before = len(creates(system.standin))
        _killed_mint(user.clone(portal.base_url), name)
        assert len(portal.wait_for_replacement(workers)) == 1  # exactly one worker died
        assert "SIGKILL" in portal.log_text()
    finally:
        portal.stop()
    record = issuance(system.db, name)
    assert record["state"] == ("issued" if point == "after_commit" else "requested")
    assert len(creates(system.standin)) == creates_before + (point != "before_upstream")

    settle(system, canary, user)
    assert issuance(system.db, name)["state"] == state
    assert (name in upstream_names(system)) is upstream
    if upstream:  # the key the user never saw is on "My keys", audited, and can be revoked there
        assert name in user.keys()


def test_worker_killed_after_the_create_was_sent(system, user, canary):
    """No hook: the stand-in creates the key and holds its answer; the test SIGKILLs the worker that
    holds the connection to the stand-in meanwhile. On an instance whose Requesty read timeout is
    long, so the worker is surely still waiting when it is killed."""
    portal = system.add_portal("patient", REQUESTY_READ_TIMEOUT="15")
    name = "killed-after-sent"
    client = user.clone(portal.base_url)
    form = client.form()
    system.standin._httpd.close_open_connections()  # no idle kept-alive connections: only ours is live
    system.standin.inject(Fault.after_action_delay(10), *CREATE)
    outcome = {}

    def post():
        try:
            outcome["response"] = client.mint(name, form)
        except requests.ConnectionError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=post)
    thread.start()
    try:
        wait_until_created(system, name)
        workers = portal.workers()
        holding = workers_connected_to(workers, system.standin.port)
        assert len(holding) == 1, holding
        os.kill(holding[0], signal.SIGKILL)
        thread.join(15)
        assert "error" in outcome, outcome
        assert portal.wait_for_replacement(workers) == set(holding)
    finally:
        thread.join(15)
        portal.stop()

    assert issuance(system.db, name)["state"] == "requested"
    settle(system, canary, user)
    assert issuance(system.db, name)["state"] == "compensated"
    assert name not in upstream_names(system)


def workers_connected_to(workers: list[int], port: int) -> list[int]:
    """The workers holding an established TCP connection to 127.0.0.1:`port` (the stand-in)."""
    sockets = set()  # inodes of the established connections to that port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    sockets.add(int(fields[9]))
    found = []
    for pid in workers:
        held = set()
        with suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):  # an fd closed meanwhile
                    if (link := os.readlink(fd)).startswith("socket:["):
                        held.add(int(link[8:-1]))
        if held & sockets:
            found.append(pid)
    return found


# --- the database going away -------------------------------------------------------------------------
@contextmanager
def database_gone(system, user):
    """Our database refuses new connections and the portal's sessions are terminated; on leaving,
    it comes back and the same gunicorn processes must serve again (no restart)."""
    portal = system.portal
    pids = {portal.pid, *portal.workers()}
    system.db.allow_connections(False)
    try:
        yield
    finally:
        system.db.allow_connections(True)
    recovered = "the portal did not recover when the database came back"
    wait_until(lambda: user.get("/healthz").status_code == 200, timeout=20, interval=0.2, message=recovered)
    assert {portal.pid, *portal.workers()} == pids  # the same processes: recovered without a restart


def test_database_refusing_the_record_before_requesty_gives_503(system, user, canary):
    """The portal's role may no longer insert issuance records: the record cannot be written, so
    Requesty is never called."""
    form = user.form()
    creates_before = len(creates(system.standin))
    system.db.set_table_rights("keys_issuance", "INSERT", granted=False)
    try:
        response = user.mint("db-refuses-record", form)
    finally:
        system.db.set_table_rights("keys_issuance", "INSERT", granted=True)
    assert len(creates(system.standin)) == creates_before
    assert issuance(system.db, "db-refuses-record") == {}
    assert response.status_code == 503, response.text[-2000:]
    assert "cannot reach its database" in response.text and not shows_secret(response)
    settle(system, canary, user)


def test_database_failing_after_requesty_created_the_key_compensates(system, user, canary):
    """The key record cannot be inserted after Requesty said yes: the key is deleted upstream again."""
    form = user.form()
    system.db.set_table_rights("keys_issuedkey", "INSERT", granted=False)
    try:
        response = user.mint("db-refuses-key", form)
    finally:
        system.db.set_table_rights("keys_issuedkey", "INSERT", granted=True)
    assert not shows_secret(response) and canary not in response.text
    assert issuance(system.db, "db-refuses-key")["state"] == "compensated"
    assert "db-refuses-key" not in upstream_names(system)
    assert response.status_code == 503, response.text[-2000:]
    assert "could not be recorded, so it was deleted again" in response.text
    settle(system, canary, user)


def test_database_gone_mid_flow_shows_no_secret_and_answers_503(system, user, canary):
    """While Requesty holds the create, the database disappears. The key must be deleted upstream
    (it cannot be recorded), no secret shown, and the answer a 503 with the reference."""
    name = "db-gone-mid-flow"
    form = user.form()
    system.standin.inject(Fault.after_action_delay(REQUESTY_READ_TIMEOUT - 0.5), *CREATE)  # answers in time
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(response=user.mint(name, form)))
    thread.start()
    try:
        wait_until_created(system, name)
        with database_gone(system, user):
            thread.join(30)
    finally:
        thread.join(30)
    response = outcome["response"]
    assert not shows_secret(response) and canary not in response.text
    assert name not in upstream_names(system)  # compensated although nothing could be recorded
    assert issuance(system.db, name)["state"] == "requested"  # the outcome was never written
    assert response.status_code == 503, f"HTTP {response.status_code}: the database error escaped the mint view"
    assert "could not be recorded" in response.text
    settle(system, canary, user)
    assert issuance(system.db, name)["state"] == "absent"


def test_database_gone_before_the_request_answers_503_without_calling_requesty(system, user, canary):
    form = user.form()
    creates_before = len(creates(system.standin))
    with database_gone(system, user):
        assert user.get("/healthz").status_code == 503
        response = user.mint("db-gone-before", form)
    assert len(creates(system.standin)) == creates_before  # Requesty never called
    assert not shows_secret(response)
    assert response.status_code == 503, f"HTTP {response.status_code}: the database error was not answered as 503"
    settle(system, canary, user)


def test_portal_recovers_without_restart_when_the_database_returns(system, user, canary):
    with database_gone(system, user):
        assert user.get("/healthz").status_code == 503
    # Every worker thread had its connection terminated; each must reconnect by itself.
    for i in range(8):
        response = user.mint(f"db-back-{i}")
        assert response.status_code == 200 and shows_secret(response)
        assert user.get("/keys/").status_code == 200
    settle(system, canary, user)


# --- the whole run -----------------------------------------------------------------------------------
def test_admin_sees_everything_and_no_secret_anywhere(system, user, admin, canary):
    """Last: the admin's pages (all keys, the audit log) and one more settle over everything."""
    settle_the_whole_run(system, canary, user, admin)
