"""Deleting a user must not leave their keys alive in Requesty (the records lose their owner)."""

from __future__ import annotations

from io import StringIO

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from keys.forms import new_nonce
from keys.models import IssuedKey
from portal.audit.models import AuditEvent

HTMX = {"HTTP_HX_REQUEST": "true"}


def mint(client, user, name) -> IssuedKey:
    data = {"name": name, "monthly_limit": "5", "manage": "none", "completions": "write", "nonce": new_nonce(user)}
    assert client.post("/keys/new/", data, **HTMX).status_code == 200
    return IssuedKey.objects.get(name=name)


def test_deleting_a_user_revokes_their_keys(rclient, requester, standin, django_capture_on_commit_callbacks):
    first, second = mint(rclient, requester, "one"), mint(rclient, requester, "two")
    with django_capture_on_commit_callbacks(execute=True):
        requester.delete()
    assert first.api_key_id not in standin.keys and second.api_key_id not in standin.keys
    assert set(IssuedKey.objects.values_list("status", flat=True)) == {"revoked"}
    details = list(AuditEvent.objects.filter(action="key.revoked").values_list("detail", flat=True))
    assert len(details) == 2 and all("offboarding of rita (user deleted)" in d for d in details)


def test_deleting_a_user_in_the_admin_revokes_their_keys(
    rclient, requester, superuser, standin, django_capture_on_commit_callbacks
):
    key = mint(rclient, requester, "leaver")
    admin = Client()
    admin.force_login(superuser)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(f"/admin/auth/user/{requester.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not User.objects.filter(username="rita").exists()
    key.refresh_from_db()
    assert key.status == "revoked" and key.api_key_id not in standin.keys


def test_a_failed_revocation_is_flagged_and_reconciliation_retries_it(
    rclient, requester, standin, django_capture_on_commit_callbacks
):
    from standin import Fault

    key = mint(rclient, requester, "stuck")
    standin.inject(Fault.status(503), method="DELETE")
    with django_capture_on_commit_callbacks(execute=True):
        requester.delete()
    key.refresh_from_db()
    assert key.status == "active" and key.owner is None and key.revocation_failed_at
    out = StringIO()
    call_command("reconcile_keys", stdout=out)
    key.refresh_from_db()
    assert key.status == "revoked" and key.api_key_id not in standin.keys


def test_reconciliation_revokes_keys_whose_owner_vanished_without_signals(rclient, requester, standin):
    key = mint(rclient, requester, "orphan")
    IssuedKey.objects.filter(pk=key.pk).update(owner=None)  # as if deleted with signals bypassed
    out = StringIO()
    call_command("reconcile_keys", "--dry-run", stdout=out)
    assert key.api_key_id in out.getvalue() and key.api_key_id in standin.keys
    call_command("reconcile_keys", stdout=StringIO())
    key.refresh_from_db()
    assert key.status == "revoked" and key.api_key_id not in standin.keys
