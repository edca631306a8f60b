"""Why a single sign-on failed: the reason for the audit log and the message for the person.

The backend and provisioning refuse (`refuse`) deep inside mozilla-django-oidc's flow; the
callback view (views.py) renders what they left on the request and audits it."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import SuspiciousOperation

from portal.audit.models import AuditEvent

from .oidc import provider_name

AGAIN = "Please try again."


@dataclass(frozen=True)
class Failure:
    reason: str  # for the audit log
    message: str  # for the person
    status: int = 403
    outcome: str = AuditEvent.Outcome.DENIED


class SignInRefused(SuspiciousOperation):
    pass


def refuse(request, reason: str, message: str, **kwargs) -> SignInRefused:
    """The exception to raise; the failure it stands for stays on the request for the view."""
    request.portal_sso_failure = Failure(reason, message, **kwargs)
    return SignInRefused(reason)


def provider_failed() -> str:
    return f"Sign-in with {provider_name()} failed: the identity provider did not answer as expected. {AGAIN}"
