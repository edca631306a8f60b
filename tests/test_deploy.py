"""Production configuration: start-up refusals, `check --deploy`, and the Dockerfile's own steps
run outside Docker (no engine here). Each runs manage.py in a subprocess with a clean environment."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROD = {
    "DJANGO_SETTINGS_MODULE": "portal.settings",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "REQUESTY_ADMIN_TOKEN": "prod-token-for-checks",
    "AUDIT_HMAC_KEY": "prod-audit-key-for-checks",
    "ALLOWED_HOSTS": "keys.example.com",
    "REQUESTY_BASE_URL": "https://api.requesty.ai",
    "DATABASE_URL": "sqlite:////tmp/portal-deploy-check.sqlite3",
    "PORTAL_BASE_URL": "https://keys.example.com",
    # Behind the buffering reverse proxy the deployment docs require (docs/examples/nginx.conf).
    "PORTAL_TRUSTED_PROXY_HOPS": "1",
    "SECURE_PROXY_SSL_HEADER": "true",
}


def clean_env(**env: str) -> dict[str, str]:
    """Only what a bare machine has, plus `env`: nothing leaks in from the test settings."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**base, **env}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("missing", ["SECRET_KEY", "REQUESTY_ADMIN_TOKEN", "AUDIT_HMAC_KEY"])
def test_missing_secret_stops_start_up_naming_it(missing):
    env = {k: v for k, v in PROD.items() if k != missing}
    result = manage("check", **env)
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


@pytest.mark.parametrize(
    "env", [{"PORTAL_ROTATION_GRACE_HOURS": "169"}, {"PORTAL_ROTATION_GRACE_HOURS": "0"}, {"PORTAL_MAX_KEY_DAYS": "-1"}]
)
def test_expiry_settings_out_of_range_stop_start_up(env):
    refused = manage("check", **PROD, **env)
    assert refused.returncode != 0 and next(iter(env)) in refused.stderr


def test_a_provider_name_that_looks_like_an_audit_tag_is_refused():
    refused = manage("check", **PROD, OIDC_PROVIDER_NAME="[bad state] IdP")
    assert refused.returncode != 0 and "OIDC_PROVIDER_NAME must not start with" in refused.stderr


def test_sandbox_is_refused_without_debug_unless_forced():
    local = {**PROD, "PORTAL_SANDBOX": "true", "REQUESTY_BASE_URL": "http://127.0.0.1:8099"}
    refused = manage("check", **local)
    assert refused.returncode != 0 and "PORTAL_SANDBOX_FORCE" in refused.stderr
    forced = manage("check", **local, PORTAL_SANDBOX_FORCE="true")
    assert forced.returncode == 0, forced.stderr


def test_a_forced_sandbox_still_needs_real_secrets():
    local = {
        **PROD,
        "PORTAL_SANDBOX": "true",
        "PORTAL_SANDBOX_FORCE": "true",
        "REQUESTY_BASE_URL": "http://127.0.0.1:8099",
    }
    del local["SECRET_KEY"]
    result = manage("check", **local)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_sandbox_never_talks_to_the_real_requesty():
    result = manage("check", DEBUG="true", PORTAL_SANDBOX="true", REQUESTY_BASE_URL="https://api.requesty.ai")
    assert result.returncode != 0 and "must point at the stand-in" in result.stderr


def test_a_misspelt_completions_cap_stops_start_up():
    result = manage("check", **PROD, PORTAL_MAX_COMPLETIONS="WRITE")
    assert result.returncode != 0 and "PORTAL_MAX_COMPLETIONS" in result.stderr


def test_check_deploy_passes_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PROD)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_defaults_are_secure():
    code = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.X_FRAME_OPTIONS)"
    )
    result = manage("shell", "-c", code, **PROD)
    assert result.stdout.splitlines()[-1].split() == ["False", "True", "True", "True", "DENY"], result.stderr


@pytest.mark.parametrize(
    "env,check_id",
    [
        ({"REQUESTY_READ_TIMEOUT": "60"}, "keys.E002"),
        ({"GUNICORN_TIMEOUT": "10"}, "keys.E002"),
        ({"REQUESTY_BASE_URL": "http://api.requesty.ai"}, "keys.W001"),
        ({"PORTAL_MAX_MONTHLY_LIMIT": "0"}, "keys.E003"),
        ({"CACHE_URL": "locmemcache://"}, "keys.W020"),
        ({"PORTAL_BASE_URL": ""}, "keys.W021"),
        ({"PORTAL_TRUSTED_PROXY_HOPS": "0", "SECURE_PROXY_SSL_HEADER": "false"}, "keys.W008"),
    ],
)
def test_custom_checks_fire_on_broken_settings(env, check_id):
    result = manage("check", "--deploy", "--fail-level", "WARNING", **{**PROD, **env})
    assert result.returncode != 0 and check_id in result.stdout + result.stderr


# --- The Dockerfile, step by step ------------------------------------------------------------------
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_shape():
    assert DOCKERFILE.count("FROM python:3.13-slim") == 2  # multi-stage
    assert re.search(r"^USER (?!root|0\b)\S+", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py"]' in DOCKERFILE
    copied = [w for args in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M) for w in args.split()[:-1]]
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    # Everything the app needs at run time is copied into the image.
    assert {"manage.py", "gunicorn.conf.py", "portal", "keys", "templates", "static"} <= set(copied)


def test_dockerfile_collectstatic_step_runs(tmp_path):
    (line,) = [ln for ln in DOCKERFILE.splitlines() if ln.startswith("RUN ") and "collectstatic" in ln]
    words = shlex.split(line.removeprefix("RUN "))
    env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
    command = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    assert command[:2] == ["/venv/bin/python", "manage.py"]
    env["STATIC_ROOT"] = str(tmp_path / "static")
    result = manage(*command[2:], **env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists()  # WhiteNoise's manifest
    assert list((tmp_path / "static").rglob("portal*.js")) and list((tmp_path / "static").rglob("htmx*.js"))


def test_gunicorn_config_is_valid():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "--check-config", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=clean_env(**PROD),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
