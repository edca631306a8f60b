"""The log as the screen shows it by default, without its own events (views and exports of the log,
docs/performance.md): a partial index on `seq` over the other events, so that the newest page reads
a page of rows however many views were recorded since the last other event, instead of walking
back through all of them. On PostgreSQL it is built CONCURRENTLY, so audit appends go on meanwhile."""

from django.db import migrations, models

INDEX = models.Index(
    fields=["seq"], name="audit_seq_not_own", condition=~models.Q(action__in=["audit.viewed", "audit.exported"])
)


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # A build that failed half way leaves an INVALID index that IF NOT EXISTS would keep: drop it.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [INDEX.name])
            invalid = cursor.fetchone()
        if invalid and invalid[0]:
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX.name}")
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX.name} ON keys_auditevent (seq)"
            " WHERE NOT (action IN ('audit.viewed', 'audit.exported'))"
        )
    else:
        schema_editor.add_index(apps.get_model("audit", "AuditEvent"), INDEX)


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX.name}")
    else:
        schema_editor.remove_index(apps.get_model("audit", "AuditEvent"), INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("audit", "0007_actor_time_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="auditevent", index=INDEX)],
            database_operations=[migrations.RunPython(create_index, drop_index, elidable=False)],
        )
    ]
