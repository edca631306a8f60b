"""Periods of time as ranges of `seq` (portal/audit/periods.py, docs/performance.md).

On PostgreSQL:
- the chain-head function (keys 0008) also returns the head's time, so that an append can keep its
  time no earlier than the previous event's (portal/audit/chain.record);
- an AFTER INSERT trigger notes in the one AuditClock row every event whose neighbour by `seq` is
  out of time order, whoever wrote it (an older release during a deploy, a hand-written row);
- the log already written is examined once, under the append lock, so nothing is missed between
  the examination and the trigger (a million events: a second or two, during which appends wait);
- the clock row may only widen (a trigger), and verify_audit checks that it covers what it finds.
"""

from django.db import migrations, models

LOCK_ID = 0x6B657973  # portal/audit/chain._LOCK_ID: no append runs while this migration examines the log

HEAD_SQL = """
DROP FUNCTION IF EXISTS keys_audit_lock_head(bigint);
CREATE FUNCTION keys_audit_lock_head(lock_id bigint)
RETURNS TABLE (head_seq bigint, head_hash varchar, head_created_at timestamptz) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_id);
    RETURN QUERY SELECT e.seq, e.hash, e.created_at FROM keys_auditevent e ORDER BY e.seq DESC LIMIT 1;
END
$$;
"""
OLD_HEAD_SQL = """
DROP FUNCTION IF EXISTS keys_audit_lock_head(bigint);
CREATE FUNCTION keys_audit_lock_head(lock_id bigint)
RETURNS TABLE (head_seq bigint, head_hash varchar) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_id);
    RETURN QUERY SELECT e.seq, e.hash FROM keys_auditevent e ORDER BY e.seq DESC LIMIT 1;
END
$$;
"""
# SECURITY DEFINER: the trigger updates the clock with the rights of the role that ran this
# migration, so the portal's own role needs only SELECT on audit_auditclock, and cannot write it.
TRIGGER_SQL = """
CREATE FUNCTION audit_note_disorder() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema} AS $$
DECLARE
    before_it timestamptz;
    after_it timestamptz;
BEGIN
    -- Under the append lock (re-entered by an append, which holds it): a writer that does not take
    -- it still waits for the others, and then sees their rows.
    PERFORM pg_advisory_xact_lock({lock_id});
    -- Its neighbours by seq, the nearest ones even across a gap (verify_audit reports gaps).
    SELECT e.created_at INTO before_it FROM keys_auditevent e WHERE e.seq < NEW.seq ORDER BY e.seq DESC LIMIT 1;
    SELECT e.created_at INTO after_it FROM keys_auditevent e WHERE e.seq > NEW.seq ORDER BY e.seq LIMIT 1;
    IF before_it > NEW.created_at THEN
        UPDATE audit_auditclock SET disorder_from = LEAST(disorder_from, NEW.created_at),
                                    disorder_to = GREATEST(disorder_to, before_it);
    END IF;
    IF NEW.created_at > after_it THEN
        UPDATE audit_auditclock SET disorder_from = LEAST(disorder_from, after_it),
                                    disorder_to = GREATEST(disorder_to, NEW.created_at);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_note_disorder AFTER INSERT ON keys_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_note_disorder();

-- The clock may only widen: narrowing it, emptying it or deleting its row would let a period's
-- page or export leave out events whose times are out of order.
CREATE FUNCTION audit_clock_only_widens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       OR (OLD.disorder_from IS NOT NULL AND (NEW.disorder_from IS NULL OR NEW.disorder_from > OLD.disorder_from))
       OR (OLD.disorder_to IS NOT NULL AND (NEW.disorder_to IS NULL OR NEW.disorder_to < OLD.disorder_to)) THEN
        RAISE EXCEPTION 'the audit clock only widens (%)', TG_OP;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_clock_only_widens BEFORE UPDATE OR DELETE ON audit_auditclock
    FOR EACH ROW EXECUTE FUNCTION audit_clock_only_widens();
CREATE TRIGGER audit_clock_no_truncate BEFORE TRUNCATE ON audit_auditclock
    FOR EACH STATEMENT EXECUTE FUNCTION audit_clock_only_widens();
-- One row at most: a second one, claiming no disorder, cannot be slipped in beside it.
CREATE UNIQUE INDEX audit_clock_one_row ON audit_auditclock ((true));
"""
# LEAST and GREATEST ignore NULLs: the first disorder noted sets both ends.
EXAMINE_SQL = """
INSERT INTO audit_auditclock (disorder_from, disorder_to)
SELECT min(created_at), max(before_it) FROM (
    SELECT created_at, lag(created_at) OVER (ORDER BY seq) AS before_it FROM keys_auditevent
) AS neighbours WHERE before_it > created_at
"""
DROP_SQL = """
DROP TRIGGER IF EXISTS audit_note_disorder ON keys_auditevent;
DROP FUNCTION IF EXISTS audit_note_disorder();
DROP TRIGGER IF EXISTS audit_clock_only_widens ON audit_auditclock;
DROP TRIGGER IF EXISTS audit_clock_no_truncate ON audit_auditclock;
DROP FUNCTION IF EXISTS audit_clock_only_widens();
DROP INDEX IF EXISTS audit_clock_one_row;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        apps.get_model("audit", "AuditClock").objects.create()  # unused: SQLite filters periods by time alone
        return
    schema_editor.execute("SELECT pg_advisory_xact_lock(%s)", params=[LOCK_ID])
    schema_editor.execute(HEAD_SQL, params=None)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = schema_editor.quote_name(cursor.fetchone()[0])
    schema_editor.execute(TRIGGER_SQL.format(schema=schema, lock_id=LOCK_ID), params=None)
    schema_editor.execute(EXAMINE_SQL, params=None)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)
        schema_editor.execute(OLD_HEAD_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_seq_not_own_index")]

    operations = [
        migrations.CreateModel(
            name="AuditClock",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("disorder_from", models.DateTimeField(null=True)),
                ("disorder_to", models.DateTimeField(null=True)),
            ],
        ),
        migrations.RunPython(install, remove),
    ]
