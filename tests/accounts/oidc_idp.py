"""A real OpenID Connect provider for the tests: `oidc-provider` (npm) in a Node process.

`tests/accounts/oidc_provider/provider.js` is the provider; this module starts it on a free loopback port,
waits until discovery answers, and drives its login pages over real HTTP with `requests`. The
portal side of a flow runs in Django's test client (or the live server, for the browser test), and
the portal talks to the provider over real HTTP too: discovery, token, JWKS and userinfo.

Missing Node or `node_modules` is a failure with instructions, never a skip (CI fails on skips).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
CLIENT_ID = "key-portal"
CLIENT_SECRET = "oidc-client-secret-CANARY-5e0c93a1"  # the sweep looks for it
START_TIMEOUT = 20


@dataclass
class IdentityProvider:
    issuer: str
    accounts_file: Path
    process: subprocess.Popen
    stderr_file: Path
    accounts: dict = field(default_factory=dict)

    def set_accounts(self, accounts: dict) -> None:
        """The provider re-reads this file on every use, so a test can change someone's e-mail
        or groups between two sign-ins."""
        self.accounts = accounts
        self.accounts_file.write_text(json.dumps(accounts))

    def update(self, login: str, **changes) -> None:
        self.set_accounts({**self.accounts, login: {**self.accounts[login], **changes}})

    def log(self) -> str:
        return self.stderr_file.read_text(errors="replace")


def _read_issuer(process: subprocess.Popen) -> str:
    """The first stdout line, `listening <issuer>`, read with a deadline."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    line = result[0].strip() if result else ""
    if not line.startswith("listening "):
        raise RuntimeError(f"the test provider did not start (first line: {line!r})")
    return line.removeprefix("listening ")


@pytest.fixture(scope="session")
def idp(tmp_path_factory) -> IdentityProvider:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "The OIDC tests need Node.js 20+ (`node` on PATH), e.g. `apt-get install -y nodejs`.", pytrace=False
        )
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            f"The test OpenID Connect provider is not installed: run `npm ci` in {PROVIDER_DIR} "
            "(`make test` and `.ci/run` do it for you).",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("oidc-provider")
    accounts_file, stderr_file = workdir / "accounts.json", workdir / "provider.log"
    accounts_file.write_text("{}")
    env = {
        **os.environ,
        "OIDC_TEST_CLIENT_ID": CLIENT_ID,
        "OIDC_TEST_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_TEST_ACCOUNTS": str(accounts_file),
        "NODE_ENV": "test",
    }
    # Up to three starts: once in CI the provider printed nothing and all SSO tests errored at setup.
    for attempt in range(3):
        with stderr_file.open("ab") as stderr:
            process = subprocess.Popen(
                [node, "provider.js"], cwd=PROVIDER_DIR, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        try:
            issuer = _read_issuer(process)
            break
        except RuntimeError as exc:
            process.kill()
            process.wait()
            if attempt == 2:
                message = f"{exc} (exit status {process.returncode}, 3 attempts)"
                pytest.fail(f"{message}\n{stderr_file.read_text(errors='replace')}", pytrace=False)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the test provider's discovery document never answered")
            time.sleep(0.1)
    except RuntimeError as exc:
        process.kill()
        process.wait()
        pytest.fail(f"{exc}\n{stderr_file.read_text(errors='replace')}", pytrace=False)
    yield IdentityProvider(issuer, accounts_file, process, stderr_file)
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- Driving the provider's pages -----------------------------------------------------------------
_FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.IGNORECASE)


def provider_login(authorize_url: str, login: str, password: str, portal_origin: str) -> str:
    """Open the authorize URL at the provider, sign in on its login page, and follow the
    provider's redirects until it sends the browser back to the portal: return that URL."""
    browser = requests.Session()
    url, response = authorize_url, None
    for _ in range(10):
        response = browser.get(url, allow_redirects=False, timeout=10)
        if response.is_redirect:
            url = urljoin(url, response.headers["Location"])
            if url.startswith(portal_origin):
                return url
            continue
        assert response.status_code == 200, (response.status_code, response.text[:500])
        action = _FORM.search(response.text)
        assert action, f"no login form at {url}: {response.text[:500]}"
        response = browser.post(
            urljoin(url, unescape(action.group(1))),
            data={"login": login, "password": password},
            allow_redirects=False,
            timeout=10,
        )
        assert response.is_redirect, (response.status_code, response.text[:500])
        url = urljoin(url, response.headers["Location"])
        if url.startswith(portal_origin):
            return url
    raise AssertionError(f"the provider never sent the browser back to {portal_origin} (last: {url})")


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
