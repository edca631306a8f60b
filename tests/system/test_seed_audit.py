"""bench/seed_audit.py, which bench/audit.py seeds its 1,000,000 events with: a chain that verifies,
the same rows as ever for a seed, and never into a log that already holds events."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import call_command

from portal.audit.models import AuditEvent

pytestmark = pytest.mark.postgres

FIELDS = ("seq", "actor_username", "action", "outcome", "key_name", "api_key_id", "monthly_limit", "source_ip")


def test_seed_audit_makes_a_valid_chain_and_refuses_a_log_with_events(db):
    from bench.seed_audit import seed_audit

    written = []
    assert seed_audit(120, batch=50, progress=written.append) == 120
    assert written == [50, 100, 120]
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    assert "120 events verified" in out.getvalue()
    rows = list(AuditEvent.objects.order_by("seq").values_list(*FIELDS))
    # What the former `manage.py seed_audit` wrote for seed 1: benchmark runs stay comparable.
    assert rows[0] == (
        1,
        "user0145",
        "mint.issued",
        "success",
        "key-888598",
        "414c343c-1027-44d1-8386-bbc4cd613e30",
        Decimal("19.32"),
        "10.253.230.121",
    )
    assert len({row[1] for row in rows}) > 50 and len({row[2] for row in rows}) == 5  # actors, actions

    with pytest.raises(ValueError, match="not empty"):
        seed_audit(5)
    assert AuditEvent.objects.count() == 120
