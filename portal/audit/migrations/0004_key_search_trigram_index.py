"""Key-name search without reading the whole log (docs/performance.md): on PostgreSQL, trigram (pg_trgm)
GIN indexes on the expressions the search's `icontains` compares, UPPER(key_name) and
UPPER(api_key_id). Built CONCURRENTLY, so audit appends (every mint) go on while a large log is
indexed. Creating the extension needs a role that may (docs/operations.md). Nothing on SQLite."""

from django.db import migrations

INDEXES = {"audit_key_name_trgm": "key_name", "audit_api_key_id_trgm": "api_key_id"}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, column in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON keys_auditevent "
            f"USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("audit", "0003_expiry_actions"), ("keys", "0019_spend")]

    operations = [migrations.RunPython(create_indexes, drop_indexes, elidable=False)]
