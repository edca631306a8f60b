"""On PostgreSQL, one call that takes the audit chain's lock and then reads the chain's head.

A VOLATILE PL/pgSQL function takes a fresh snapshot for each statement in it, so the head is read
*after* the lock is granted: an append costs one round trip fewer while it holds the lock
(keys/audit.py)."""

from django.db import migrations

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION keys_audit_lock_head(lock_id bigint)
RETURNS TABLE (head_seq bigint, head_hash varchar) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_id);
    RETURN QUERY SELECT e.seq, e.hash FROM keys_auditevent e ORDER BY e.seq DESC LIMIT 1;
END
$$;
"""
DROP_SQL = "DROP FUNCTION IF EXISTS keys_audit_lock_head(bigint);"


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION_SQL, params=None)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("keys", "0007_approval_onboarding_template")]

    operations = [migrations.RunPython(install, remove)]
