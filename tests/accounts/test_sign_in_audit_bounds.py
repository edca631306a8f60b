"""Failed sign-ins anyone can send are audited within a bound per address (invariant I7)."""

from __future__ import annotations

from django.test import Client

from portal.audit.models import AuditEvent


def test_unknown_usernames_are_audited_up_to_a_bound_per_address_real_accounts_always(
    client, requester, settings, caplog
):
    """Guessing usernames costs nothing, so those failures are bounded per address (junk must not
    queue every mint behind the chain's lock); failures for real accounts never are, so noise
    cannot hide a guess at a real password."""
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 3
    for n in range(6):
        response = client.post("/accounts/login/", {"username": f"nobody{n}", "password": "guess"})
        assert response.status_code == 200 and 'role="alert"' in response.content.decode()
    failed = AuditEvent.objects.filter(action="auth.sign_in_failed")
    assert failed.count() == 4  # the bound, and one saying it was reached
    assert failed.filter(detail__startswith="[unknown username] [bound reached]").count() == 1
    assert all(e.detail.startswith("[unknown username] ") for e in failed)
    assert sum("Audit bound reached" in r.getMessage() for r in caplog.records) == 2
    for _ in range(3):  # a real account's failures, from the same address: every one recorded
        client.post("/accounts/login/", {"username": "rita", "password": "guess"})
    assert failed.filter(detail__contains="for username 'rita'").count() == 3
    Client(REMOTE_ADDR="10.9.8.7").post("/accounts/login/", {"username": "x", "password": "y"})
    assert failed.filter(source_ip="10.9.8.7").count() == 1  # another address has its own bound


def test_the_bound_note_is_written_once_even_if_parallel_events_overshoot(db, settings):
    from portal.audit import bounds, chain

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 2
    args = ("auth.sign_in_failed", "denied")
    for n in range(3):  # as if parallel requests had all counted below the bound
        chain.record(*args, actor=None, source_ip="10.1.1.1", detail=f"[unknown username] 'n{n}'")
    kw = {"kind": "unknown username", "actor": None, "source_ip": "10.1.1.1"}
    note = bounds.record_noise(*args, detail="'late'", **kw)
    assert note.detail.startswith("[unknown username] [bound reached]")
    assert bounds.record_noise(*args, detail="'later'", **kw) is None


def test_each_kind_of_junk_has_its_own_bound_whatever_its_text(db, settings):
    """The kind is a tag at the start of the detail, not a word anywhere in it: a username that
    reads "bad state" fills no bound but its own."""
    from portal.audit import bounds

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1
    args = ("auth.sign_in_failed", "denied")
    kw = {"actor": None, "source_ip": "10.2.2.2"}
    for n in range(3):
        bounds.record_noise(*args, kind="unknown username", detail=f"for 'bad state {n}'", **kw)
    assert bounds.record_noise(*args, kind="bad state", detail="bad state: no state", **kw) is not None
    assert AuditEvent.objects.filter(detail__startswith="[bad state] ").count() == 1


def test_junk_without_a_usable_address_shares_one_bound(db, settings):
    from portal.audit import bounds

    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1
    kw = {"kind": "bad state", "actor": None, "source_ip": "unknown", "detail": "bad state: no state"}
    recorded = [bounds.record_noise("auth.sign_in_failed", "denied", **kw) for _ in range(4)]
    assert [e is not None for e in recorded] == [True, True, False, False]


def test_lockouts_of_made_up_usernames_are_bounded_too(client, db, settings):
    settings.PORTAL_AUDIT_REFUSALS_PER_HOUR = 1
    for name in ("ghost1", "ghost2"):
        for _ in range(settings.PORTAL_SIGN_IN_FAILURE_LIMIT):
            client.post("/accounts/login/", {"username": name, "password": "guess"})
    events = AuditEvent.objects.filter(action="auth.sign_in_failed")
    assert events.count() == 2 and all(e.detail.startswith("[unknown username] ") for e in events)
