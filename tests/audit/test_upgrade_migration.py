"""Upgrading a deployment from the schema where the `keys` app held everything (keys 0014) to the
one where `audit` and `accounts` own their models (keys 0015, audit 0001, accounts 0001): rows,
the hash chain, permissions and group grants survive `migrate` alone, and verify_audit passes."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from portal.audit import chain

BEFORE = [("keys", "0014_audit_action_time_index"), ("audit", None), ("accounts", None)]
EVENTS = 5
PERMISSIONS = ["portal_admin", "view_audit_log"]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    ContentType.objects.clear_cache()
    return executor


def write_todays_data(apps) -> None:
    """What a deployment on keys 0014 holds: a user in "Portal admins" and one auditor by direct
    permission, an issuance and its key, an SSO identity and grant, and a chained audit log."""
    User, Group, Permission = (apps.get_model("auth", name) for name in ("User", "Group", "Permission"))
    Issuance, IssuedKey = apps.get_model("keys", "Issuance"), apps.get_model("keys", "IssuedKey")
    AuditEvent = apps.get_model("keys", "AuditEvent")
    admins, _ = Group.objects.get_or_create(name="Portal admins")  # as migration 0003 made it
    admins.permissions.add(*Permission.objects.filter(content_type__app_label="keys", codename__in=PERMISSIONS))
    admin = User.objects.create(username="old-admin", email="old-admin@example.com")
    admin.groups.add(admins)
    auditor = User.objects.create(username="old-auditor")
    auditor.user_permissions.add(Permission.objects.get(content_type__app_label="keys", codename="view_audit_log"))
    issuance = Issuance.objects.create(
        id=uuid.UUID(int=7),
        nonce="n-upgrade",
        actor=admin,
        name="laptop",
        monthly_limit=Decimal("25.00"),
        manage="none",
        completions="read",
        state="issued",
        api_key_id="key-upgrade",
    )
    IssuedKey.objects.create(
        api_key_id="key-upgrade",
        issuance=issuance,
        owner=admin,
        name="laptop",
        monthly_limit=Decimal("25.00"),
        manage="none",
        completions="read",
    )
    identity = apps.get_model("keys", "OIDCIdentity")
    identity.objects.create(user=admin, issuer="https://idp.example", subject="sub-1")
    apps.get_model("keys", "SSOGroupGrant").objects.create(user=auditor, group=Group.objects.create(name="SSO"))
    previous, start = chain.GENESIS, datetime(2026, 11, 1, tzinfo=UTC)
    for seq in range(1, EVENTS + 1):
        event = AuditEvent(
            seq=seq,
            created_at=start + timedelta(minutes=seq),
            actor_id=admin.pk,
            actor_username=admin.username,
            actor_email=admin.email,
            action="mint.issued" if seq % 2 else "audit.viewed",
            outcome="success",
            issuance_id=issuance.pk if seq % 2 else None,
            key_name="laptop <b>",
            api_key_id="key-upgrade",
            monthly_limit=Decimal("25.00"),
            manage="none",
            completions="read",
            source_ip="10.0.0.1",
            upstream_status=201,
            detail=f"event {seq}",
            prev_hash=previous,
        )
        event.hash = chain.compute_hash(previous, event)
        event.save(force_insert=True)
        previous = event.hash


@pytest.mark.django_db(transaction=True)
def test_migrate_alone_upgrades_a_keys_only_database():
    executor = migrate(BEFORE)
    write_todays_data(executor.loader.project_state(BEFORE[:1]).apps)

    executor = migrate(executor.loader.graph.leaf_nodes())

    from django.contrib.auth.models import User

    from keys.models import IssuedKey
    from portal.accounts.models import OIDCIdentity, SSOGroupGrant
    from portal.accounts.permissions import can_view_audit, is_portal_admin
    from portal.audit.models import AuditEvent

    assert AuditEvent.objects.count() == EVENTS
    assert AuditEvent.objects.filter(issuance__issued_key__api_key_id="key-upgrade").count() == 3
    assert IssuedKey.objects.get().owner.username == "old-admin"
    assert OIDCIdentity.objects.get().user.username == "old-admin"
    assert SSOGroupGrant.objects.get().user.username == "old-auditor"
    assert chain.verify().ok and chain.verify().count == EVENTS
    call_command("verify_audit")  # raises CommandError on a broken chain
    # Grants made under the old app label still hold under the new one.
    assert {ct.app_label for ct in ContentType.objects.filter(model__in=["auditevent", "oidcidentity"])} == {
        "audit",
        "accounts",
    }
    assert not ContentType.objects.filter(app_label="keys", model__in=["auditevent", "oidcidentity", "ssogroupgrant"])
    admin, auditor = User.objects.get(username="old-admin"), User.objects.get(username="old-auditor")
    assert admin.has_perm("audit.view_audit_log") and is_portal_admin(admin) and can_view_audit(admin)
    assert auditor.has_perm("audit.view_audit_log") and not is_portal_admin(auditor)
    # The chain goes on from the old head.
    chain.record("audit.viewed", "success", actor=admin, detail="after the upgrade")
    assert chain.verify().count == EVENTS + 1
    if connection.vendor == "postgresql":  # the trigger still guards the same table
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE keys_auditevent SET detail = 'rewritten' WHERE seq = 1")


@pytest.mark.django_db(transaction=True)
def test_people_signed_in_before_the_upgrade_stay_signed_in():
    """Sessions name their sign-in backend, which moved (keys.sso -> portal.accounts.backends)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import Client

    executor = migrate(BEFORE)
    user = User.objects.create_user("still-here", password="pw-still-here")
    session = SessionStore()
    session.update(
        {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "keys.sso.PasswordBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
            "portal_signed_in_at": int(time.time()),
            "portal_sign_in_method": "password",
        }
    )
    session.create()
    migrate(executor.loader.graph.leaf_nodes())

    client = Client()
    client.cookies["sessionid"] = session.session_key
    response = client.get("/keys/")
    assert response.status_code == 200 and "still-here" in response.content.decode()
    stored = SessionStore(session_key=session.session_key).load()
    assert stored[BACKEND_SESSION_KEY] == "portal.accounts.backends.PasswordBackend"


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_can_be_rolled_back():
    executor = migrate(BEFORE)
    old_apps = executor.loader.project_state(BEFORE[:1]).apps
    write_todays_data(old_apps)
    executor = migrate(executor.loader.graph.leaf_nodes())
    executor = migrate(BEFORE)
    assert ContentType.objects.get(model="auditevent").app_label == "keys"
    assert old_apps.get_model("keys", "AuditEvent").objects.count() == EVENTS
    migrate(executor.loader.graph.leaf_nodes())
    assert chain.verify().ok
