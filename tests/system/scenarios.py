"""What every fault scenario (test_faults_*.py) shares: the calls it watches and its closing check.

Each scenario ends in `settle()`: `manage.py reconcile_keys --stale-minutes 0` in a subprocess with
the server's environment, then the invariant (every key the stand-in holds is an issued, audited
portal key; nothing left `requested`/`unknown`; no duplicate creates), no 500 anywhere in the
server log, and the leak sweep: the canary secret in no table (raw SQL), no line of the server
log or the reconciliation's output, no page the users can reach and no response header or cookie.
"""

from __future__ import annotations

from tests.polling import wait_until

from .browser import shows_secret
from .checks import (
    ADMIN_KEY_ID,
    check_invariant,
    server_errors,
    sweep_database,
    sweep_headers,
    sweep_pages,
    sweep_text,
    upstream_keys,
)
from .harness import REQUESTY_CONNECT_TIMEOUT, REQUESTY_READ_TIMEOUT

CREATE = ("POST", "/v1/manage/apikey")
DELETE = ("DELETE", "/v1/manage/apikey/")
DEADLINE = REQUESTY_CONNECT_TIMEOUT + REQUESTY_READ_TIMEOUT  # the portal's whole budget for one call
UNKNOWN = "We could not confirm whether Requesty created the key"


def create_names(standin) -> list[str]:
    return [c.body["name"] for c in standin.calls_to(*CREATE) if c.body and isinstance(c.body.get("name"), str)]


def upstream_names(system) -> set[str]:
    return {name.rsplit(" [portal:", 1)[0] for name in upstream_keys(system.standin_url).values()}


def wait_until_created(system, name: str) -> None:
    wait_until(lambda: name in upstream_names(system), timeout=10, message="the create never reached the stand-in")


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


def settle_the_whole_run(system, canary, user, admin) -> None:
    """A module's last scenario: the admin's pages (all keys, the audit log) and one more settle
    over everything the shared system has seen so far; the admin token's own key is untouched and
    the audit chain verifies."""
    settle(system, canary, user, admin)
    assert ADMIN_KEY_ID not in upstream_keys(system.standin_url)
    assert system.portal.manage("verify_audit").returncode == 0


def assert_unknown_outcome(response, canary):
    assert response.status_code == 202
    assert UNKNOWN in response.text
    assert not shows_secret(response) and canary not in response.text
    assert 'name="nonce"' not in response.text  # no form: nobody should retry blindly
