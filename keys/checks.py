"""System checks for configurations that would be unsafe in production (threat 15).

`manage.py check --deploy` runs them; start-up already refuses a missing SECRET_KEY or admin token
and sandbox mode without DEBUG (portal/settings.py)."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def requesty_settings(app_configs, **kwargs):
    problems = []
    deadline = settings.REQUESTY_CONNECT_TIMEOUT + settings.REQUESTY_READ_TIMEOUT
    if settings.REQUESTY_CONNECT_TIMEOUT <= 0 or settings.REQUESTY_READ_TIMEOUT <= 0:
        problems.append(Error("Requesty timeouts must be positive.", id="keys.E001"))
    # A mint may make two calls in one request: the create, and a compensating delete.
    if 2 * deadline >= settings.GUNICORN_TIMEOUT:
        problems.append(
            Error(
                f"Twice REQUESTY_CONNECT_TIMEOUT + REQUESTY_READ_TIMEOUT ({2 * deadline:g}s: a create and a "
                f"compensating delete) must be below GUNICORN_TIMEOUT ({settings.GUNICORN_TIMEOUT}s), and your "
                "reverse proxy's read timeout must be longer still, or a slow Requesty cuts mints off mid-way.",
                id="keys.E002",
            )
        )
    if not settings.PORTAL_SANDBOX and not settings.REQUESTY_BASE_URL.startswith("https://"):
        problems.append(
            Warning("REQUESTY_BASE_URL is not HTTPS: the admin token would travel in clear text.", id="keys.W001")
        )
    if settings.PORTAL_SANDBOX:
        problems.append(Warning("PORTAL_SANDBOX is on: keys come from the stand-in Requesty.", id="keys.W002"))
    if settings.PORTAL_MAX_MONTHLY_LIMIT <= 0:
        problems.append(Error("PORTAL_MAX_MONTHLY_LIMIT must be more than 0.", id="keys.E003"))
    return problems


@register(Tags.security, deploy=True)
def sso_settings(app_configs, **kwargs):
    """Single sign-on (keys/sso.py): half-configured, too open, in clear text, or too slow."""
    from . import sso

    problems = []
    partial = settings.OIDC_CLIENT_ID or settings.OIDC_CLIENT_SECRET or settings.OIDC_ISSUER or settings.OIDC_ONLY
    if not sso.enabled():
        if partial:
            problems.append(
                Warning(
                    "Single sign-on is partly configured and therefore off: it needs OIDC_CLIENT_ID, "
                    "OIDC_CLIENT_SECRET and OIDC_ISSUER (or the explicit endpoints).",
                    id="keys.W003",
                )
            )
        return problems
    if not settings.OIDC_ALLOWED_EMAIL_DOMAINS:
        problems.append(
            Warning(
                "OIDC_ALLOWED_EMAIL_DOMAINS is empty: anyone the provider vouches for may sign in "
                "(with Google, any Google account).",
                id="keys.W004",
            )
        )
    urls = [settings.OIDC_ISSUER, *(getattr(settings, name) for name in sso._EXPLICIT.values())]
    if any(url and not url.startswith("https://") for url in urls):
        problems.append(Warning("An OIDC issuer or endpoint is not HTTPS.", id="keys.W005"))
    # A sign-in makes up to four calls (discovery, token, JWKS, userinfo), each connect + read.
    if 8 * settings.OIDC_TIMEOUT >= settings.GUNICORN_TIMEOUT:
        problems.append(
            Warning(
                f"8 x OIDC_TIMEOUT ({8 * settings.OIDC_TIMEOUT:g}s) should stay below GUNICORN_TIMEOUT "
                f"({settings.GUNICORN_TIMEOUT}s), or a slow provider kills workers mid-sign-in.",
                id="keys.W006",
            )
        )
    return problems


@register(Tags.security, deploy=True)
def reliability_kill_points(app_configs, **kwargs):
    """PORTAL_TEST_KILL_AT makes workers SIGKILL themselves mid-mint (keys/faultpoints.py): for the
    reliability suite only. A Warning, not an Error, so the suite's production-like server (DEBUG
    off) still starts, while a release's `check --deploy --fail-level WARNING` fails."""
    import os

    from .faultpoints import ENV

    if os.environ.get(ENV) and not settings.DEBUG and not settings.PORTAL_SANDBOX:
        return [
            Warning(
                f"{ENV} is set ({os.environ[ENV]!r}): mints will kill their worker at that point. "
                "It is for the reliability test suite only; unset it.",
                id="keys.W007",
            )
        ]
    return []
