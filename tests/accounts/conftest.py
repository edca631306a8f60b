"""Fixtures for tests/accounts: the test OpenID Connect provider, and single sign-on pointed at it."""

from __future__ import annotations

import pytest

from tests.accounts.helpers import ALICE
from tests.accounts.oidc_idp import CLIENT_ID, CLIENT_SECRET, idp  # noqa: F401 (idp: a session fixture)


@pytest.fixture
def oidc(idp, settings, db):  # noqa: F811
    """SSO on, pointed at the test provider, with one account (alice) and a clean slate."""
    settings.OIDC_ISSUER = idp.issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    settings.OIDC_SCOPES = "openid email profile groups"
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    settings.OIDC_ADMIN_GROUPS = ["portal-admins"]
    settings.OIDC_ONLY = False
    settings.OIDC_BREAK_GLASS = True
    idp.set_accounts({"alice": dict(ALICE)})
    return idp
