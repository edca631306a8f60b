"""The reverse proxy example (docs/examples/nginx.conf) in front of the portal's gunicorn (issue
16, item 10): slow clients, sending headers or a body a byte at a time, starve gunicorn's threads
when they reach it directly, and do not when nginx is in front; nginx cuts them off at its
timeouts. The example runs as shipped, except for ports, certificate paths and shorter timeouts.

Needs nginx (Debian: `apt-get install nginx-light`; `.ci/run` installs it). Missing is a failure
with instructions, never a skip (CI fails on skips)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "nginx.conf"
HOST = "keys.example.com"
TIMEOUT = 2  # the example's 10 s client timeouts, shortened for the test
SLOW_CLIENTS = 24
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # self-signed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.fail("The reverse proxy test needs nginx: `apt-get install -y nginx-light`.", pytrace=False)
    return found


def _substitute(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text)
    assert count >= 1, f"the example no longer has {pattern!r}: update this test with it"
    return new


def _site_config(tmp: Path, upstream: int, http: int, https: int) -> str:
    text = EXAMPLE.read_text()
    text = _substitute(text, r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{upstream};")
    text = _substitute(text, r"listen 80;", f"listen 127.0.0.1:{http};")
    text = _substitute(text, r"listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;")
    text = _substitute(text, r"ssl_certificate \S+;", f"ssl_certificate {tmp}/cert.pem;")
    text = _substitute(text, r"ssl_certificate_key \S+;", f"ssl_certificate_key {tmp}/key.pem;")
    for name in ("client_header_timeout", "client_body_timeout"):
        text = _substitute(text, rf"{name} 10s;", f"{name} {TIMEOUT}s;")
    return text


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """gunicorn (the portal, 1 worker x 2 threads) and nginx in front of it, both on loopback."""
    nginx = _nginx()
    tmp = tmp_path_factory.mktemp("proxy")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}"]
        + ["-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
        check=True,
        capture_output=True,
    )
    upstream, http, https = _free_port(), _free_port(), _free_port()
    (tmp / "portal.conf").write_text(_site_config(tmp, upstream, http, https))
    user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temporary directory
    (tmp / "nginx.conf").write_text(
        f"{user}\ndaemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log info;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n  access_log {tmp}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {tmp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  include {tmp}/portal.conf;\n}}\n"
    )
    check = subprocess.run([nginx, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{tmp}/portal.sqlite3",  # /healthz only asks the database "SELECT 1"
        "GUNICORN_BIND": f"127.0.0.1:{upstream}",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
    }
    log = (tmp / "gunicorn.log").open("w")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env, stdout=log, stderr=log
        ),
        subprocess.Popen([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")], stderr=subprocess.DEVNULL),
    ]
    try:
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{upstream}/healthz"), timeout=30, message="gunicorn did not start"
        )
        wait_until(lambda: _answers(f"https://127.0.0.1:{https}/healthz"), timeout=10, message="nginx did not start")
        yield {"upstream": upstream, "http": http, "https": https, "log": tmp / "gunicorn.log"}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        log.close()


def _answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return _get(url, timeout).status_code == 200
    except requests.RequestException:
        return False


def _get(url: str, timeout: float, **kwargs) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    return session.get(url, timeout=timeout, verify=False, headers={"Host": HOST}, **kwargs)


def _slow_clients(port: int, tls: bool) -> list[socket.socket]:
    """Half send a request line and one header byte; half send headers and one byte of a body."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    clients = []
    for i in range(SLOW_CLIENTS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            sock = context.wrap_socket(sock, server_hostname=HOST)
        if i % 2:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nX-A".encode())
        else:
            head = f"POST /accounts/login/ HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n"
            sock.sendall((head + "Content-Type: application/x-www-form-urlencoded\r\n\r\nu").encode())
        clients.append(sock)
    return clients


def _close(clients: list[socket.socket]) -> None:
    for sock in clients:
        sock.close()


def test_slow_clients_starve_gunicorn_when_they_reach_it_directly(stack):
    """Why the proxy is needed: two slow clients hold both threads, /healthz goes unanswered."""
    clients = _slow_clients(stack["upstream"], tls=False)
    try:
        with pytest.raises(requests.Timeout):
            _get(f"http://127.0.0.1:{stack['upstream']}/healthz", timeout=TIMEOUT)
    finally:
        _close(clients)
    wait_until(lambda: _answers(f"http://127.0.0.1:{stack['upstream']}/healthz"), timeout=70)


def test_behind_nginx_slow_clients_hold_no_gunicorn_thread(stack):
    clients = _slow_clients(stack["https"], tls=True)
    try:
        started = time.monotonic()
        response = _get(f"https://127.0.0.1:{stack['https']}/healthz", timeout=TIMEOUT)
        assert response.status_code == 200 and response.text == "ok\n"
        assert time.monotonic() - started < 1
        # nginx drops each slow client at its timeout: the socket closes without an answer or with 408.
        for sock in clients:
            sock.settimeout(TIMEOUT + 5)
            answer = sock.recv(64)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        _close(clients)


def test_plain_http_is_sent_to_https(stack):
    response = _get(f"http://127.0.0.1:{stack['http']}/keys/", timeout=5, allow_redirects=False)
    assert response.status_code == 301 and response.headers["Location"] == f"https://{HOST}/keys/"


# --- gunicorn's access log (issue 16, item 11) ----------------------------------------------------
def test_the_sso_callbacks_query_is_not_in_the_access_log(stack):
    """`/oidc/callback/?code=…&state=…`: the code is a credential; the line keeps the path only."""
    for path in ("/oidc/callback/", "//oidc/callback/", "/oidc/callback"):
        _get(f"http://127.0.0.1:{stack['upstream']}{path}?code=CODE-CANARY-41&state=STATE-CANARY-7", timeout=5)
    _get(f"https://127.0.0.1:{stack['https']}/oidc/callback/?code=CODE-CANARY-42&state=S", timeout=5)
    _get(f"http://127.0.0.1:{stack['upstream']}/healthz?probe=kept", timeout=5)
    wait_until(lambda: "probe=kept" in stack["log"].read_text(), timeout=5, message="no access log line")
    log = stack["log"].read_text()
    assert "CODE-CANARY" not in log and "STATE-CANARY" not in log
    assert log.count("/oidc/callback/?[query hidden]") >= 2
