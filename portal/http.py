"""Outgoing HTTP: the one way the portal builds a `requests` session for the services it calls
(Requesty in keys/requesty/transport.py, the identity provider in portal/accounts/oidc.py).

Two rules, the same for every such call:
- nothing comes from the process environment: no proxies (`HTTP(S)_PROXY`, `ALL_PROXY`), no
  credentials from `.netrc`, no CA bundle from `REQUESTS_CA_BUNDLE` (`trust_env = False`): the
  admin token and the client secret go straight to the service, verified against certifi's CAs;
- every call has a (connect, read) timeout: the caller's, else the session's default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import requests

Timeouts = tuple[float, float]


class Session(requests.Session):
    """A `requests.Session` that ignores the environment and never waits without a timeout."""

    def __init__(self, timeout: Callable[[], Timeouts]):
        super().__init__()
        self.trust_env = False
        self.default_timeout = timeout  # called at each request, so settings changes apply at once

    def request(self, method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout()
        return super().request(method, url, **kwargs)


def session(timeout: Callable[[], Timeouts]) -> Session:
    """A new session for one service; `timeout()` gives its default (connect, read) seconds."""
    return Session(timeout)


_log = logging.getLogger(__name__)
_webhooks = session(timeout=lambda: (3.0, 5.0))


def post_json(url: str, payload: dict, *, what: str = "webhook") -> bool:
    """POST `payload` once (never retried: an alert storm must not become a request storm) within
    the session's short timeouts. A failure is logged, never raised: the caller carries on."""
    try:
        response = _webhooks.post(url, json=payload, allow_redirects=False)
    except requests.RequestException as exc:
        _log.warning("%s POST failed: %s", what, type(exc).__name__)
        return False
    with response:
        if 200 <= response.status_code < 300:
            return True
    _log.warning("%s POST answered HTTP %s", what, response.status_code)
    return False
