from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Requesty keys"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401  (registers the system checks and signal handlers)
