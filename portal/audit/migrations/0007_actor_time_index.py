"""One actor over a period (docs/performance.md): an index on (actor_username, created_at), so such a
page reads the actor's events in the period and no more, instead of walking back by `seq` through
every later event of the actor (a cost that grew with the time since the period). On PostgreSQL it
is built CONCURRENTLY, so audit appends (every mint) go on while a large log is indexed."""

from django.db import migrations, models

INDEX = models.Index(fields=["actor_username", "created_at"], name="audit_actor_time")


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX.name} ON keys_auditevent (actor_username, created_at)"
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

    dependencies = [("audit", "0006_plain_action_labels")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="auditevent", index=INDEX)],
            database_operations=[migrations.RunPython(create_index, drop_index, elidable=False)],
        )
    ]
