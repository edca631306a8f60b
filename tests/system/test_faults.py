"""Every fault of shared/security.md ("Faults to inject") against the real server: the portal under
gunicorn (production command, gthread workers, DEBUG off) on its own PostgreSQL database, talking to
the stand-in Requesty over HTTP. See docs/reliability.md.

Each scenario ends in `settle()`: `manage.py reconcile_keys --stale-minutes 0` in a subprocess with
the server's environment, then the invariant (every key the stand-in holds is an issued, audited
portal key; nothing left `requested`/`unknown`; no duplicate creates), no 500 anywhere in the
server log, and the leak sweep: the canary secret in no table (raw SQL), no line of the server
log or the reconciliation's output, no page the users can reach and no response header or cookie.
The database, the stand-in and the log accumulate across scenarios, so each check also covers
everything before it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager

import pytest
import requests

from standin import Fault

from .conftest import ADMIN, REQUESTER
from .harness import (
    ADMIN_KEY_ID,
    check_invariant,
    closed_port,
    issuance,
    log_records,
    server_errors,
    shows_secret,
    sweep_database,
    sweep_headers,
    sweep_pages,
    sweep_text,
    upstream_keys,
)

pytestmark = pytest.mark.postgres

CREATE = ("POST", "/v1/manage/apikey")
DELETE = ("DELETE", "/v1/manage/apikey/")
DEADLINE = 1 + 2  # REQUESTY_CONNECT_TIMEOUT + REQUESTY_READ_TIMEOUT in the harness environment
UNKNOWN = "We could not confirm whether Requesty created the key"


# --- fixtures and the closing check ----------------------------------------------------------------
@pytest.fixture(scope="module")
def user(fault_system):
    return fault_system.client(REQUESTER)


@pytest.fixture(scope="module")
def admin(fault_system):
    client = fault_system.client(ADMIN)
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


def create_names(standin) -> list[str]:
    return [c.body["name"] for c in standin.calls_to(*CREATE) if c.body and isinstance(c.body.get("name"), str)]


def upstream_names(system) -> set[str]:
    return {name.rsplit(" [portal:", 1)[0] for name in upstream_keys(system.standin_url).values()}


def settle(system, canary, *clients):
    """Reconcile, then check the invariant, the logs and the leak sweep (see the module docstring)."""
    result = system.portal.reconcile()
    assert result.returncode == 0, result.stdout + result.stderr
    problems = check_invariant(system.db, upstream_keys(system.standin_url), create_names(system.standin))
    assert problems == [], "\n".join(problems)
    assert server_errors(system.new_log_text()) == []
    logs = system.log_text()
    leaks = sweep_database(system.db, canary)
    leaks += sweep_text("the server logs", logs, canary)
    leaks += sweep_text("the reconciliation's output", result.stdout + result.stderr, canary)
    for client in clients:
        leaks += sweep_pages(client, canary, client.pages) + sweep_headers(client, canary)
    assert leaks == []
    return result


def assert_unknown_outcome(response, canary):
    assert response.status_code == 202
    assert UNKNOWN in response.text
    assert not shows_secret(response) and canary not in response.text
    assert 'name="nonce"' not in response.text  # no form: nobody should retry blindly


# --- the sweep itself -------------------------------------------------------------------------------
def test_the_sweeps_find_a_planted_canary(system, canary):
    """The leak sweep must be able to fail: a canary inside a signed, compressed session row (as
    Django stores sessions), a JSON log line and a header are all found."""
    from django.core import signing

    data = signing.dumps({"note": canary}, salt="django.contrib.sessions.SessionStore", compress=True)
    with system.db.connect() as conn:
        conn.execute(
            "INSERT INTO django_session (session_key, session_data, expire_date) VALUES (%s, %s, now())",
            ["planted-canary-session", data],
        )
    try:
        assert canary not in data  # only found by decoding
        assert sweep_database(system.db, canary) == ["database table django_session"]
    finally:
        with system.db.connect() as conn:
            conn.execute("DELETE FROM django_session WHERE session_key = 'planted-canary-session'")
    assert sweep_database(system.db, canary) == []
    assert sweep_text("log", json.dumps({"message": f"oops {canary[:-3]}"}), canary) == ["log"]  # partial too
    assert sweep_text("log", "nothing here", canary) == []


# --- the baseline ----------------------------------------------------------------------------------
def test_mint_list_and_revoke_under_gunicorn(system, user, admin, canary):
    response = user.mint("baseline")
    assert response.status_code == 200 and shows_secret(response)
    assert canary in response.text  # the canary is what the stand-in minted: the sweeps look for it
    assert "no-store" in response.headers["Cache-Control"]
    assert issuance(system.db, "baseline")["actions"] == ["mint.requested", "mint.issued"]
    user.mint("baseline-kept")

    revoked = user.revoke(user.keys()["baseline"])
    assert revoked.status_code == 200 and "Revoked." in revoked.text
    assert upstream_names(system) >= {"baseline-kept"} and "baseline" not in upstream_names(system)
    settle(system, canary, user, admin)


# --- outcome unknown: timeouts, 5xx, resets, malformed answers, trickles ------------------------------
UNKNOWN_FAULTS = {
    # name: (fault on the create, does the key exist upstream afterwards?)
    "read timeout after sending": (Fault.after_action_delay(DEADLINE + 1.5), True),
    "500 after creating": (Fault.after_action_status(500), True),
    "502 from a proxy, nothing created": (Fault.status(502, "<html>Bad gateway</html>", "text/html"), False),
    "504 from a proxy, nothing created": (Fault.status(504), False),
    "504 after creating": (Fault.after_action_status(504), True),
    "reset before acting": (Fault.reset(), False),
    "reset mid-response, after creating": (Fault.after_action_reset(), True),
    "malformed 2xx: HTML": (Fault.after_action_body("<html><body>OK</body></html>", 201, "text/html"), True),
    "malformed 2xx: non-UUID id": (
        Fault.after_action_body(lambda r: json.dumps({**r, "api_key_id": "key_" + r["api_key_id"]})),
        True,
    ),
    "malformed 2xx: secret but no id": (Fault.after_action_body(lambda r: json.dumps({"api_key": r["api_key"]})), True),
    "malformed 2xx: empty object": (Fault.after_action_body("{}"), True),
    "slow trickle of the body past the deadline": (Fault.trickle(0.25), True),
    "slow trickle of the headers past the deadline": (Fault.trickle_headers(0.25), True),
}


@pytest.mark.parametrize("label", list(UNKNOWN_FAULTS))
def test_unknown_outcome_is_never_a_secret_and_reconciles(system, user, canary, label):
    fault, created = UNKNOWN_FAULTS[label]
    name = "unknown-" + label.split(":")[-1].strip().replace(" ", "-")[:40]
    form = user.form()
    system.standin.inject(fault, *CREATE)
    started = time.monotonic()
    response = user.mint(name, form)
    elapsed = time.monotonic() - started

    assert_unknown_outcome(response, canary)
    # The client's own deadline fires, well before gunicorn's worker timeout (30 s here).
    assert elapsed < DEADLINE + 2, f"{elapsed:.1f}s"
    record = issuance(system.db, name)
    assert record["state"] == "unknown" and record["actions"] == ["mint.requested", "mint.unknown"]
    assert (name in upstream_names(system)) is created

    settle(system, canary, user)
    record = issuance(system.db, name)
    assert record["state"] == ("compensated" if created else "absent")
    assert name not in upstream_names(system)


def test_malformed_answer_with_an_id_is_compensated_at_once(system, user, canary):
    system.standin.inject(Fault.after_action_body(lambda r: json.dumps({"api_key_id": r["api_key_id"]})), *CREATE)
    response = user.mint("no-secret-in-answer")
    assert_unknown_outcome(response, canary)
    record = issuance(system.db, "no-secret-in-answer")
    assert record["state"] == "compensated" and record["api_key_id"]
    assert record["actions"] == ["mint.requested", "mint.unknown", "key.compensated"]
    assert "no-secret-in-answer" not in upstream_names(system)  # before any reconciliation
    settle(system, canary, user)


# --- definite refusals ------------------------------------------------------------------------------
def test_400_is_rejected_without_echoing_requesty(system, user, canary):
    raw = "<script>alert('upstream')</script> RAW-UPSTREAM-400"
    system.standin.inject(Fault.status(400, {"error": {"origin": "router", "message": raw}}), *CREATE)
    response = user.mint("refused-400")
    assert response.status_code == 502
    assert "Requesty refused these values" in response.text
    assert "RAW-UPSTREAM-400" not in response.text and "<script>alert" not in response.text
    assert 'name="nonce"' in response.text  # a definite no: the form comes back for another try
    assert issuance(system.db, "refused-400")["state"] == "rejected"
    settle(system, canary, user)
    assert issuance(system.db, "refused-400")["state"] == "rejected"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_says_misconfigured_and_logs_an_error(system, user, canary, status):
    name = f"refused-{status}"
    system.standin.inject(Fault.status(status), *CREATE)
    response = user.mint(name)
    assert response.status_code == 502
    assert "The portal is misconfigured" in response.text and "admins have been notified" in response.text
    record = issuance(system.db, name)
    assert record["state"] == "rejected" and record["upstream_status"] == status
    errors = [
        r
        for r in log_records(system.log_text())
        if (r["level"], r["message"]) == ("ERROR", "Requesty create failed: AuthFailed")
        and r.get("upstream_status") == status
    ]
    assert errors, "no ERROR record for the auth failure"
    settle(system, canary, user)


def test_429_is_rejected_honouring_retry_after(system, user, canary):
    system.standin.inject(Fault.status(429, headers={"Retry-After": "17"}), *CREATE)
    response = user.mint("refused-429")
    assert response.status_code == 429
    assert response.headers.get("Retry-After") == "17"
    assert "Try again in 17 seconds" in response.text
    assert issuance(system.db, "refused-429")["state"] == "rejected"
    settle(system, canary, user)


@pytest.mark.parametrize(
    "label,base_url",
    [
        ("connection refused", lambda: f"http://127.0.0.1:{closed_port()}"),
        ("DNS failure", lambda: "http://requesty-standin.invalid"),
    ],
    ids=["connection-refused", "dns-failure"],
)
def test_request_never_sent_is_rejected(system, user, canary, label, base_url):
    """Requesty unreachable: a portal instance configured with a closed port / an unresolvable name
    (beside the main one, same database). Nothing left the portal, so nothing is to reconcile."""
    portal = system.add_portal("unreachable", REQUESTY_BASE_URL=base_url())
    try:
        creates_before = len(system.standin.calls_to(*CREATE))
        name = "never-sent-" + label.replace(" ", "-")
        response = user.clone(portal.base_url).mint(name)
        assert response.status_code == 503
        assert "Requesty could not be reached, so no key was created" in response.text
        assert 'name="nonce"' in response.text
        assert issuance(system.db, name)["state"] == "rejected"
        assert len(system.standin.calls_to(*CREATE)) == creates_before
    finally:
        portal.stop()
    settle(system, canary, user)
    assert issuance(system.db, name)["state"] == "rejected"


# --- compensation failing ---------------------------------------------------------------------------
def test_failed_compensating_delete_stays_unknown_until_reconciled(system, user, canary):
    system.standin.inject(Fault.after_action_body(lambda r: json.dumps({"api_key_id": r["api_key_id"]})), *CREATE)
    system.standin.inject(Fault.status(500), *DELETE)
    response = user.mint("compensation-fails")
    assert_unknown_outcome(response, canary)
    record = issuance(system.db, "compensation-fails")
    assert record["state"] == "unknown" and record["api_key_id"]  # kept, so reconciliation can retry
    assert record["actions"][-1] == "key.compensation_failed"
    assert "compensation-fails" in upstream_names(system)
    settle(system, canary, user)
    assert issuance(system.db, "compensation-fails")["state"] == "compensated"
    assert "compensation-fails" not in upstream_names(system)


def test_404_on_compensating_delete_counts_as_gone(system, user, canary):
    """A 404 (Requesty's own error body) means "already gone". Here the stand-in lies: the key is
    still there, and reconciliation removes it as a late key of a settled attempt."""
    system.standin.inject(Fault.after_action_body(lambda r: json.dumps({"api_key_id": r["api_key_id"]})), *CREATE)
    system.standin.inject(Fault.status(404, {"error": {"origin": "router", "message": "API key not found"}}), *DELETE)
    response = user.mint("compensation-404")
    assert_unknown_outcome(response, canary)
    assert issuance(system.db, "compensation-404")["state"] == "compensated"
    assert "compensation-404" in upstream_names(system)
    result = settle(system, canary, user)
    assert "(late)" in result.stdout
    assert "compensation-404" not in upstream_names(system)


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
        creates_before = len(system.standin.calls_to(*CREATE))
        _killed_mint(user.clone(portal.base_url), name)
        assert len(portal.wait_for_replacement(workers)) == 1  # exactly one worker died
        assert "SIGKILL" in portal.log_text()
    finally:
        portal.stop()
    record = issuance(system.db, name)
    assert record["state"] == ("issued" if point == "after_commit" else "requested")
    assert len(system.standin.calls_to(*CREATE)) == creates_before + (point != "before_upstream")

    settle(system, canary, user)
    assert issuance(system.db, name)["state"] == state
    assert (name in upstream_names(system)) is upstream
    if upstream:  # the key the user never saw is on "My keys", audited, and can be revoked there
        assert name in user.keys()


def test_worker_killed_after_the_create_was_sent(system, user, canary):
    """No hook: the stand-in creates the key and holds its answer; the harness SIGKILLs the worker
    that holds the connection to the stand-in meanwhile."""
    portal = system.portal
    name = "killed-after-sent"
    form = user.form()
    system.standin._httpd.close_open_connections()  # no idle kept-alive connections: only ours is live
    system.standin.inject(Fault.after_action_delay(10), *CREATE)
    outcome = {}

    def post():
        try:
            outcome["response"] = user.mint(name, form)
        except requests.ConnectionError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=post)
    thread.start()
    deadline = time.monotonic() + 10
    while name not in upstream_names(system):
        assert time.monotonic() < deadline, "the create never reached the stand-in"
        time.sleep(0.02)
    workers = portal.workers()
    holding = portal.workers_connected_to(system.standin.port)
    assert len(holding) == 1, holding
    os.kill(holding[0], signal.SIGKILL)
    thread.join(15)
    assert "error" in outcome, outcome
    assert portal.wait_for_replacement(workers) == set(holding)

    assert issuance(system.db, name)["state"] == "requested"
    settle(system, canary, user)
    assert issuance(system.db, name)["state"] == "compensated"
    assert name not in upstream_names(system)


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
    deadline = time.monotonic() + 20
    while user.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "the portal did not recover when the database came back"
        time.sleep(0.2)
    assert {portal.pid, *portal.workers()} == pids  # the same processes: recovered without a restart


def wait_until_created(system, name: str) -> None:
    deadline = time.monotonic() + 10
    while name not in upstream_names(system):
        assert time.monotonic() < deadline, "the create never reached the stand-in"
        time.sleep(0.02)


def test_database_refusing_the_record_before_requesty_gives_503(system, user, canary):
    """The portal's role may no longer insert issuance records: the record cannot be written, so
    Requesty is never called."""
    form = user.form()
    creates_before = len(system.standin.calls_to(*CREATE))
    system.db.set_table_rights("keys_issuance", "INSERT", granted=False)
    try:
        response = user.mint("db-refuses-record", form)
    finally:
        system.db.set_table_rights("keys_issuance", "INSERT", granted=True)
    assert len(system.standin.calls_to(*CREATE)) == creates_before
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
    system.standin.inject(Fault.after_action_delay(1.5), *CREATE)  # below the 2 s read timeout
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
    creates_before = len(system.standin.calls_to(*CREATE))
    with database_gone(system, user):
        assert user.get("/healthz").status_code == 503
        response = user.mint("db-gone-before", form)
    assert len(system.standin.calls_to(*CREATE)) == creates_before  # Requesty never called
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
    settle(system, canary, user, admin)
    assert ADMIN_KEY_ID not in upstream_keys(system.standin_url)
    verified = system.portal.manage("verify_audit")
    assert verified.returncode == 0
