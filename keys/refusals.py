"""Refused requests: what a refused request for a key or for more records, and what a person is
told once their refusals this hour reach PORTAL_AUDIT_REFUSALS_PER_HOUR (portal/audit/bounds.py):
every form that can be refused at will (a key, a limit, an expiry, an approval request) answers
with this, examining nothing and appending nothing more."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpResponse

from portal.audit import bounds, chain
from portal.audit.models import AuditEvent

from .minting import in_minutes, seconds_until_an_hour_after


@dataclass(frozen=True)
class TooManyRefusals:
    """What a person is told once their refusals this hour reach the bound, and in how many seconds
    the hour has room again."""

    message: str
    wait: int

    def answer(self, response: HttpResponse) -> HttpResponse:
        """`response` (the page or section showing `message`, status 429), telling when to try again."""
        response["Retry-After"] = str(self.wait)
        return response


def too_many_refusals(request) -> TooManyRefusals:
    """Record (once an hour) that this person's requests are refused unexamined; what to tell them."""
    bounds.record_refusals_exceeded(request.user, chain.client_ip(request))
    moment = bounds.refusal_keeping_the_bound(request.user)
    wait = seconds_until_an_hour_after(moment) if moment else 60
    message = (
        f"The portal refused {settings.PORTAL_AUDIT_REFUSALS_PER_HOUR} of your requests in the last hour, "
        f"so it is not taking more from you for now. Nothing was created or changed. Try again in "
        f"{in_minutes(wait)}, or ask a portal admin if you need something sooner."
    )
    return TooManyRefusals(message, wait)


def asked_values(form) -> dict:
    """What a refused key form asked for, as it was sent (cut to the audit log's column sizes): the
    name and rights, and the limit if it was an amount."""
    data = form.data
    return {
        "key_name": str(data.get("name", ""))[:200],
        "monthly_limit": form.cleaned_data.get("monthly_limit"),
        "manage": str(data.get("manage", ""))[:16],
        "completions": str(data.get("completions", ""))[:16],
    }


def record_refused_approval_request(request, message: str, **values) -> None:
    """An approval request refused before it was made, audited with what it was about (`values`)."""
    chain.record_request(
        request,
        AuditEvent.Action.APPROVAL_REFUSED,
        AuditEvent.Outcome.DENIED,
        detail=f"approval request refused: {message}",
        **values,
    )


def refuse_request_for_more(request, form, message: str, **values) -> None:
    """An approval request refused before it was made (the pending cap): audited with what it was
    about, and the form says why."""
    record_refused_approval_request(request, message, **values)
    form.add_error(None, message)
