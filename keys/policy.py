"""Who may choose what. The server decides; templates only mirror these answers."""

from decimal import Decimal

from django.conf import settings

LEVELS = ("none", "read", "write")
DEFAULT_MONTHLY_LIMIT = Decimal("10")


def is_portal_admin(user) -> bool:
    """Superusers and holders of the portal admin permission."""
    return bool(user.is_active and (user.is_superuser or user.has_perm("keys.portal_admin")))


def manage_levels(user) -> tuple[str, ...]:
    """A `manage` key can mint keys outside the portal: never self-service (invariant I4)."""
    return LEVELS if is_portal_admin(user) else ("none",)


def completions_levels(user) -> tuple[str, ...]:
    return LEVELS


def max_monthly_limit(user) -> Decimal | None:
    """None means no cap (admins)."""
    return None if is_portal_admin(user) else settings.PORTAL_MAX_MONTHLY_LIMIT


def min_monthly_limit(user) -> Decimal:
    """Admins may set 0, which Requesty reads as "no cap"; everyone else needs a positive cap."""
    return Decimal("0") if is_portal_admin(user) else Decimal("0.01")


def default_monthly_limit(user) -> Decimal:
    cap = max_monthly_limit(user)
    return DEFAULT_MONTHLY_LIMIT if cap is None else min(DEFAULT_MONTHLY_LIMIT, cap)
