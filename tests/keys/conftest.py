"""Fixtures for the keys tests: a key of the requester's, minted through the form, and a client
signed in as the second requester."""

from __future__ import annotations

import pytest
from django.test import Client

from keys.models import IssuedKey
from tests.keys.helpers import mint


@pytest.fixture
def rkey(rclient, requester, standin) -> IssuedKey:
    return mint(rclient, requester)


@pytest.fixture
def r2client(requester2) -> Client:
    client = Client()
    client.force_login(requester2)
    return client
