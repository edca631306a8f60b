"""The leak sweep: given a canary secret, look everywhere the portal could have kept it (I1)."""

from __future__ import annotations

import base64
import pickle

from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.models import Session
from django.core import mail
from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.db import connection
from django.http import HttpRequest


def sweep(canary: str, *, logs=None, responses=()) -> list[str]:
    """Return where the canary was found (an empty list means nowhere)."""
    found: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 (names from introspection)
            if any(canary in repr(row) for row in cursor.fetchall()):
                found.append(f"database table {table}")
    for session in Session.objects.all():
        if canary in repr(session.get_decoded()):
            found.append("a session")
    for cache in caches.all(initialized_only=True):
        if isinstance(cache, DatabaseCache):  # rows hold base64 pickles: decode them
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT value FROM {connection.ops.quote_name(cache._table)}")  # noqa: S608
                values = [base64.b64decode(row[0]) for row in cursor.fetchall()]
        else:
            values = list(getattr(cache, "_cache", {}).values())
        for value in values:
            if canary in repr(pickle.loads(value)) or canary.encode() in value:  # noqa: S301 (our own cache)
                found.append("the cache")
    for message in mail.outbox:
        if canary in message.message().as_string():
            found.append(f"e-mail {message.subject!r}")
    if logs is not None:
        if canary in logs.text or any(canary in repr(vars(r)) for r in logs.records):
            found.append("the logs")
    for response in responses:
        if any(canary in value for value in response.headers.values()):
            found.append("response headers")
        if any(canary in morsel.OutputString() for morsel in response.cookies.values()):
            found.append("cookies")
        if "messages" in response.cookies and canary in repr(_messages(response.cookies["messages"].value)):
            found.append("the messages cookie")
    return found


def _messages(value: str):
    """The messages cookie is signed and may be compressed: decode it as Django does."""
    return CookieStorage(HttpRequest())._decode(value)
