"""The database cache's table is made by `migrate` (keys/apps.py), so deployments, the Docker
image's `migrate`, `make run` (the sandbox migrates) and CI need no extra step."""

from django.core.management import call_command
from django.db import connection


def test_migrate_creates_the_cache_table(db):
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE portal_cache")
    assert "portal_cache" not in connection.introspection.table_names()
    call_command("migrate", verbosity=0)
    assert "portal_cache" in connection.introspection.table_names()
