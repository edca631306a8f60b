"""Audit events are stored by the ORM and only ever inserted: an event object can add a row,
never change one (on PostgreSQL a trigger refuses changes too)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from portal.audit import chain
from portal.audit.models import AuditEvent


def test_a_recorded_event_is_stored_as_chained(db, requester):
    first = chain.record(chain.Action.AUDIT_VIEWED, chain.Outcome.SUCCESS, actor=requester, source_ip="10.0.0.1")
    second = chain.record(chain.Action.AUDIT_EXPORTED, chain.Outcome.SUCCESS, actor=None, detail="x" * 600)
    stored = AuditEvent.objects.get(pk=second.pk)
    assert (first.seq, second.seq, second.prev_hash) == (1, 2, first.hash)
    assert stored.hash == chain.compute_hash(stored.prev_hash, stored) == second.hash
    assert (stored.actor_username, len(stored.detail), stored.created_at) == ("system", 500, second.created_at)
    assert AuditEvent.objects.get(pk=first.pk).source_ip == "10.0.0.1" and chain.verify().ok


def test_an_unsaved_copy_of_an_event_cannot_overwrite_it(db):
    original = chain.record(chain.Action.AUDIT_VIEWED, chain.Outcome.SUCCESS, actor=None, detail="original")
    copied = {name: getattr(original, name) for name in (*chain.CHAINED_FIELDS, "prev_hash", "hash")}
    forged = AuditEvent(pk=original.pk, **{**copied, "detail": "rewritten"})
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()  # an INSERT, whatever the caller asks: the row exists, so it fails
    assert AuditEvent.objects.get().detail == "original" and chain.verify().ok
