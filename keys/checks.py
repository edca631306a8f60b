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


@register(Tags.caches, deploy=True)
def shared_cache(app_configs, **kwargs):
    """The spend figures' one-call-per-period gate (keys/usage.py) lives in the default cache: a
    per-process cache would let every worker and instance call Requesty on its own."""
    backend = settings.CACHES["default"]["BACKEND"]
    if backend.endswith(("LocMemCache", "DummyCache")):
        return [
            Warning(
                f"The default cache ({backend.rsplit('.', 1)[-1]}) is not shared between processes, so each "
                "would call Requesty for spend on its own. Leave CACHE_URL unset (a table in the database) "
                "or point it at Redis.",
                id="keys.W020",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def email_links(app_configs, **kwargs):
    """Expiry reminders, budget alerts and idle-key e-mails are sent by `manage.py housekeeping`,
    which has no request to take the portal's address from."""
    if not settings.PORTAL_BASE_URL.startswith("https://") and not settings.DEBUG and not settings.PORTAL_SANDBOX:
        return [
            Warning(
                "PORTAL_BASE_URL is not an https:// address (e.g. https://keys.example.com): links in expiry "
                "reminder, budget alert and idle-key e-mails would not lead to the portal.",
                id="keys.W021",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def reverse_proxy(app_configs, **kwargs):
    """gunicorn must not face clients directly: slow ones hold its threads (docs/operations.md,
    "Reverse proxy"). A portal behind a proxy has been told so: PORTAL_TRUSTED_PROXY_HOPS for the
    client address, SECURE_PROXY_SSL_HEADER for HTTPS. Neither set means it is reached directly."""
    if settings.DEBUG or settings.PORTAL_TRUSTED_PROXY_HOPS > 0 or getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        return []
    return [
        Warning(
            "The portal seems to be reached without a reverse proxy (PORTAL_TRUSTED_PROXY_HOPS is 0 and "
            "SECURE_PROXY_SSL_HEADER is off). Put a buffering reverse proxy in front of gunicorn "
            "(docs/examples/nginx.conf): clients that send slowly otherwise hold its threads.",
            id="keys.W008",
        )
    ]
