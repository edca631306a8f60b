"""The Requesty key-management client: the rest of the code never calls Requesty but through here
(`from keys import requesty; requesty.create_key(...)`).

- api.py: the calls (create, list, get, limit, expiry, labels, delete, usage) and their results;
- transport.py: how a call travels (session, timeouts and deadline, name resolution, TLS) and how
  each failure is classified;
- errors.py: the typed errors.

Strict in what it sends, tolerant in what it reads (see docs/requesty-api.md). Every failure
becomes one of a few typed errors, split by what the caller may conclude:

- `Rejected` and its subclasses: Requesty definitely did not act (4xx, or the request never left).
- `OutcomeUnknown` and its subclasses: Requesty may have acted (timeout after sending, 5xx,
  reset connection, malformed 2xx). The create call is never retried automatically, because
  Requesty has no idempotency key.

Errors carry the upstream status and a short, plain message; never the token, never a secret.
"""

from .api import (
    CreatedKey,
    KeyDay,
    KeyInfo,
    Secret,
    UsagePoint,
    create_key,
    delete_key,
    get_key,
    get_usage,
    list_keys,
    org_usage_by_key,
    parse_money,
    set_expiry,
    set_labels,
    update_limit,
)
from .errors import (
    AuthFailed,
    BadRequest,
    MalformedResponse,
    NotFound,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    RequestyError,
    Unavailable,
)

__all__ = [
    "AuthFailed",
    "BadRequest",
    "CreatedKey",
    "KeyDay",
    "KeyInfo",
    "MalformedResponse",
    "NotFound",
    "NotSent",
    "OutcomeUnknown",
    "RateLimited",
    "Rejected",
    "RequestyError",
    "Secret",
    "Unavailable",
    "UsagePoint",
    "create_key",
    "delete_key",
    "get_key",
    "get_usage",
    "list_keys",
    "org_usage_by_key",
    "parse_money",
    "set_expiry",
    "set_labels",
    "update_limit",
]
