"""Requesty misbehaving, against the real server: every Requesty fault of docs/security.md
("Faults to inject") with the portal under gunicorn (production command, gthread workers, DEBUG
off) on its own PostgreSQL database, talking to the stand-in over HTTP.

Timeouts, 5xx, resets, malformed and trickled answers leave the outcome unknown; 400, 401/403, 429
and a Requesty that cannot be reached are definite refusals; a compensating delete can fail too.
Every scenario ends in scenarios.settle (the invariant, no 500, no leak).
"""

from __future__ import annotations

import json
import time

import pytest

from standin import Fault

from .browser import shows_secret
from .checks import issuance, log_records, sweep_database, sweep_text
from .harness import closed_port
from .scenarios import (
    CREATE,
    DEADLINE,
    DELETE,
    assert_unknown_outcome,
    settle,
    settle_the_whole_run,
    upstream_names,
)

pytestmark = pytest.mark.postgres


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
    assert issuance(system.db, "baseline")["actions"] == [
        "mint.requested",
        "mint.issued",
        "key.expiry_set",
        "key.labelled",
    ]
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


# --- the whole run -----------------------------------------------------------------------------------
def test_admin_sees_everything_and_no_secret_anywhere(system, user, admin, canary):
    """Last: the admin's pages (all keys, the audit log) and one more settle over everything."""
    settle_the_whole_run(system, canary, user, admin)
