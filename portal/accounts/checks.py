"""System checks for single sign-on settings that would be unsafe in production (threat 15)."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def sso_settings(app_configs, **kwargs):
    """Single sign-on (portal/accounts/oidc.py): half-configured, too open, in clear text, or too slow."""
    from portal.accounts import oidc

    problems = []
    partial = settings.OIDC_CLIENT_ID or settings.OIDC_CLIENT_SECRET or settings.OIDC_ISSUER or settings.OIDC_ONLY
    if not oidc.enabled():
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
    urls = [settings.OIDC_ISSUER, *(getattr(settings, name) for name in oidc.EXPLICIT.values())]
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
