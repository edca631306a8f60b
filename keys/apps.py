from django.apps import AppConfig
from django.core.management import call_command
from django.db.models.signals import post_migrate


def create_cache_table(sender, using="default", verbosity=1, **kwargs) -> None:
    """`migrate` also creates the database cache's table (portal/settings.py, CACHES), so the
    deployment steps, the Docker image's `migrate`, `make run` and CI need no extra command.
    A no-op when the table exists or the cache is not a database cache."""
    call_command("createcachetable", database=using, verbosity=0)


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Requesty keys"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401  (registers the system checks and signal handlers)

        post_migrate.connect(create_cache_table, sender=self, dispatch_uid="keys.create_cache_table")
