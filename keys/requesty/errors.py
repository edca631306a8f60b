"""The Requesty client's errors, split by what the caller may conclude (see keys/requesty/__init__.py).

Each carries the upstream status and a short, plain message; never the token, never a secret.
"""

from __future__ import annotations


class RequestyError(Exception):
    """Base class. `status` is the upstream HTTP status, or None if there was no response."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class Rejected(RequestyError):
    """Requesty definitely did not act."""


class NotSent(Rejected):
    """The request never left: connection refused, DNS failure, connect timeout."""


class BadRequest(Rejected):
    """400: Requesty refused the body."""


class AuthFailed(Rejected):
    """401/403: the admin token is missing, invalid, revoked or lacks `manage` rights."""


class NotFound(Rejected):
    """404: unknown key id."""


class RateLimited(Rejected):
    def __init__(self, message: str, status: int | None = 429, retry_after: int | None = None):
        super().__init__(message, status)
        self.retry_after = retry_after


class OutcomeUnknown(RequestyError):
    """Requesty may or may not have acted."""


class Unavailable(OutcomeUnknown):
    """5xx, or a reset connection / timeout after the request was sent."""


class MalformedResponse(OutcomeUnknown):
    """A 2xx whose body is not what the API documents.

    `api_key_id` is set when a usable key id could still be read, so the caller can compensate.
    """

    def __init__(self, message: str, status: int | None = None, api_key_id: str | None = None):
        super().__init__(message, status)
        self.api_key_id = api_key_id
