"""Who may choose what, and how much is left. The server decides; templates mirror these answers.

Portal admins (superusers and holders of `keys.portal_admin`) have no caps. Everyone else gets the
most generous value of each field across the spending policies of their groups, or the defaults
from settings if none of their groups has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection

from portal.accounts.permissions import is_portal_admin

from .models import Issuance, IssuedKey, SpendingPolicy

LEVELS = ("none", "read", "write")
# What each permission level allows, in the words the pages use (shared/requesty-api.md).
MANAGE_WORDS = {
    "none": "no access to other keys",
    "read": "can list and read other keys",
    "write": "can create, change and delete keys: an admin credential",
}
COMPLETIONS_WORDS = {
    "none": "no use of models",
    "read": "read-only: cannot call models",
    "write": "can call models through the gateway",
}
DEFAULT_MONTHLY_LIMIT = Decimal("10")


@dataclass(frozen=True)
class Policy:
    max_key_limit: Decimal | None  # None: no cap (admins)
    max_total_limit: Decimal | None
    max_active_keys: int | None
    max_completions: str
    manage_requestable: bool
    is_admin: bool = False

    @property
    def completions_levels(self) -> tuple[str, ...]:
        return LEVELS[: LEVELS.index(self.max_completions) + 1]

    @property
    def manage_levels(self) -> tuple[str, ...]:
        """A `manage` key can mint keys outside the portal: never self-service (invariant I4)."""
        return LEVELS if self.is_admin else ("none",)

    @property
    def min_limit(self) -> Decimal:
        """Admins may set 0, which Requesty reads as "no cap"; everyone else needs a positive cap."""
        return Decimal("0") if self.is_admin else Decimal("0.01")


ADMIN_POLICY = Policy(None, None, None, "write", True, is_admin=True)


def resolve(user) -> Policy:
    if is_portal_admin(user):
        return ADMIN_POLICY
    fields = ("max_key_limit", "max_total_limit", "max_active_keys", "max_completions", "manage_requestable")
    policies = list(SpendingPolicy.objects.filter(group__user=user).values_list(*fields))
    if not policies:
        return Policy(
            settings.PORTAL_MAX_MONTHLY_LIMIT,
            settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT,
            settings.PORTAL_MAX_ACTIVE_KEYS,
            settings.PORTAL_MAX_COMPLETIONS,
            settings.PORTAL_ALLOW_MANAGE_REQUESTS,
        )
    key_limits, total_limits, key_counts, completions, manage = zip(*policies, strict=True)
    return Policy(max(key_limits), max(total_limits), max(key_counts), max(completions, key=LEVELS.index), any(manage))


_USER_LOCK_CLASS = 0x6D696E74  # "mint": advisory locks (class, user id), one per user


def lock_user(user) -> None:
    """The per-user lock under which every check-then-commit against the caps runs (minting, limit
    changes), held until the transaction ends. An advisory lock, not a row lock on the user:
    foreign-key checks on the user row (FOR KEY SHARE) must never wait on it, or two mints and the
    audit chain's lock can deadlock. SQLite needs none: its IMMEDIATE transactions already
    serialise writers (portal/settings.py)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # plain SQL: the ORM has no advisory locks
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_USER_LOCK_CLASS, user.pk])


@dataclass(frozen=True)
class Headroom:
    active_keys: int
    committed: Decimal  # sum of monthly limits of active keys (the higher of current and pending) and of
    # attempts still in flight
    keys_left: int | None
    money_left: Decimal | None

    def key_cap(self, policy: Policy) -> Decimal | None:
        """The highest limit one more key may have right now."""
        if policy.max_key_limit is None:
            return None
        return max(Decimal(0), min(policy.max_key_limit, self.money_left))


def headroom(user, policy: Policy) -> Headroom:
    """What the user holds now. Attempts whose outcome is not settled count as held, and a key
    with a limit change in flight counts at the higher of its current and its pending limit, so an
    unknown outcome cannot be used to exceed the caps.

    One statement, so one snapshot: with separate queries for keys and for attempts, a mint that
    turns its attempt into a key between them (PostgreSQL, READ COMMITTED) would be counted in
    neither, and parallel mints could exceed a cap."""
    active, pending = IssuedKey.Status.ACTIVE, [Issuance.State.REQUESTED, Issuance.State.UNKNOWN]
    with connection.cursor() as cursor:  # plain SQL: ORM aggregate() reads one table; both must share one snapshot
        cursor.execute(_HEADROOM_SQL, [user.pk, active, user.pk, active, user.pk, *pending, user.pk, *pending])
        keys_n, keys_s, pending_n, pending_s = cursor.fetchone()
    count = keys_n + pending_n
    total = _money(keys_s) + _money(pending_s)
    return Headroom(
        active_keys=count,
        committed=total,
        keys_left=None if policy.max_active_keys is None else max(0, policy.max_active_keys - count),
        money_left=None if policy.max_total_limit is None else max(Decimal(0), policy.max_total_limit - total),
    )


_HEADROOM_SQL = """
SELECT
  (SELECT COUNT(*) FROM keys_issuedkey WHERE owner_id = %s AND status = %s),
  (SELECT COALESCE(SUM(CASE WHEN pending_limit IS NOT NULL AND pending_limit > monthly_limit
                            THEN pending_limit ELSE monthly_limit END), 0)
     FROM keys_issuedkey WHERE owner_id = %s AND status = %s),
  (SELECT COUNT(*) FROM keys_issuance WHERE actor_id = %s AND state IN (%s, %s)),
  (SELECT COALESCE(SUM(monthly_limit), 0) FROM keys_issuance WHERE actor_id = %s AND state IN (%s, %s))
"""


def _money(value) -> Decimal:
    """A sum of limits as cents (SQLite may return a float or an int, PostgreSQL a Decimal)."""
    return Decimal(str(value)).quantize(Decimal("0.01"))


def violations(user, values: dict, policy: Policy | None = None, room: Headroom | None = None) -> list[str]:
    """Why these values are beyond the user's policy (empty: within it). `room`: a headroom the
    caller computed moments ago (the form's advisory check); the authoritative check under the
    per-user lock when minting passes none, so the headroom is read inside that transaction."""
    policy = policy or resolve(user)
    if policy.is_admin:
        return []
    room = room or headroom(user, policy)
    problems = []
    if values["manage"] != "none":
        problems.append("Keys with manage rights need an admin's approval.")
    if values["completions"] not in policy.completions_levels:
        problems.append(f"Your policy allows completions up to “{policy.max_completions}”.")
    if values["monthly_limit"] > policy.max_key_limit:
        problems.append(f"Your policy allows at most {money(policy.max_key_limit)} per key.")
    elif values["monthly_limit"] > room.money_left:
        problems.append(
            f"That would take your keys' monthly limits over your total of {money(policy.max_total_limit)} "
            f"({money(room.money_left)} left)."
        )
    if room.keys_left == 0:
        problems.append(f"You already have {room.active_keys} active keys, the most your policy allows.")
    return problems


def money(amount: Decimal) -> str:
    return f"${amount:.2f}"


@dataclass(frozen=True)
class Budget:
    """The monthly budget as a person sees it: "$500.00 of $500.00 used by 1 key"."""

    used: Decimal
    total: Decimal
    keys: int
    left: Decimal
    percent: int


def budget(policy: Policy, room: Headroom) -> Budget | None:
    """None for who has no total (admins)."""
    if policy.max_total_limit is None:
        return None
    total = policy.max_total_limit
    percent = 100 if total <= 0 else min(100, int(room.committed * 100 / total))
    return Budget(room.committed, total, room.active_keys, max(Decimal(0), total - room.committed), percent)


def budget_users(user):
    """The keys that use the budget, largest limit first: what to lower or revoke to make room."""
    return IssuedKey.objects.filter(owner=user, status=IssuedKey.Status.ACTIVE).order_by("-monthly_limit", "name")


def default_monthly_limit(policy: Policy, room: Headroom) -> Decimal | None:
    """The prefilled limit; None (an empty field) when no valid limit is left: never prefill 0."""
    cap = room.key_cap(policy)
    if cap is None:
        return DEFAULT_MONTHLY_LIMIT
    return min(DEFAULT_MONTHLY_LIMIT, cap) if cap >= policy.min_limit else None
