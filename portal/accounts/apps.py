from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "portal.accounts"
    label = "accounts"
    verbose_name = "Accounts and sign-in"

    def ready(self) -> None:
        from . import access, checks, signals, throttle  # noqa: F401  (registers the system checks and signal handlers)
