"""Who may choose what, and how much is left. The server decides; templates mirror these answers.

Portal admins (superusers and holders of `keys.portal_admin`) have no caps. Everyone else gets the
most generous value of each field across the spending policies of their groups, or the defaults
from settings if none of their groups has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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
    max_key_days: int | None = None  # longest key lifetime; None: keys may never expire
    is_admin: bool = False
    # The first (by name) of the person's groups that has a policy, "" for none: the team their keys
    # are attributed to in Requesty's labels (keys/labels.py), read with the policy. None: not read
    # (an admin's policy comes from no group).
    team: str | None = None

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
    rows = SpendingPolicy.objects.filter(group__user=user).order_by("group__name")
    policies = list(rows.values_list(*SpendingPolicy.CAPS, "group__name"))
    if not policies:
        return Policy(
            settings.PORTAL_MAX_MONTHLY_LIMIT,
            settings.PORTAL_MAX_TOTAL_MONTHLY_LIMIT,
            settings.PORTAL_MAX_ACTIVE_KEYS,
            settings.PORTAL_MAX_COMPLETIONS,
            settings.PORTAL_ALLOW_MANAGE_REQUESTS,
            settings.PORTAL_MAX_KEY_DAYS or None,
            team="",
        )
    key_limits, total_limits, key_counts, completions, manage, days, groups = zip(*policies, strict=True)
    return Policy(
        max(key_limits),
        max(total_limits),
        max(key_counts),
        max(completions, key=LEVELS.index),
        any(manage),
        None if None in days else max(days),  # the most generous: "no maximum" beats any number
        team=groups[0],
    )


def latest_expiry(pol: Policy, now: datetime) -> datetime | None:
    """The latest expiry a key may get now without approval (None: no limit, "Never" allowed)."""
    return None if pol.max_key_days is None else now + timedelta(days=pol.max_key_days)


def lifetime_problem(pol: Policy, expires_at: datetime | None, now: datetime) -> str:
    """Why this expiry is beyond the policy's maximum lifetime ("" when it is within)."""
    latest = latest_expiry(pol, now)
    if latest is None:
        return ""
    if expires_at is None:
        return f"Your policy does not allow keys that never expire; the longest is {pol.max_key_days} days."
    if expires_at > latest:
        return f"Your policy allows a key to last at most {pol.max_key_days} days (until {latest:%Y-%m-%d})."
    return ""


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


def pending_approvals_full(user) -> str:
    """Inside a transaction, before creating an approval request of any kind: takes the person's
    lock (so parallel requests cannot together pass the cap) and says why no more may wait, if
    PORTAL_MAX_PENDING_APPROVALS of theirs already wait for a decision ("" if one more may)."""
    from .models import ApprovalRequest

    lock_user(user)
    cap = settings.PORTAL_MAX_PENDING_APPROVALS
    if ApprovalRequest.objects.filter(requester=user, status=ApprovalRequest.Status.PENDING)[:cap].count() < cap:
        return ""
    return (
        f"You already have {cap} requests waiting for an admin's decision, the most allowed at once. "
        "Wait for a decision on one of them; nothing was sent."
    )


@dataclass(frozen=True)
class Headroom:
    active_keys: int
    committed: Decimal  # sum of monthly limits of active keys (the higher of current and pending) and of
    # attempts still in flight
    keys_left: int | None
    money_left: Decimal | None
    # Active keys (or attempts) with no cap: a limit of 0, which only an admin can set. Such a key
    # can spend without bound, so it takes the owner's whole total (docs/security.md, "No cap").
    uncapped: int = 0

    def without(self, key: IssuedKey) -> Headroom:
        """What is left if `key` (one of the active ones counted) did not count: a rotation's old key."""
        counted = max(key.monthly_limit, key.pending_limit or 0)
        return Headroom(
            active_keys=self.active_keys - 1,
            committed=self.committed - counted,
            keys_left=None if self.keys_left is None else self.keys_left + 1,
            money_left=None if self.money_left is None else self.money_left + counted,
        )

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
        cursor.execute(
            _HEADROOM_SQL, [user.pk, active] * 2 + [user.pk, *pending] * 2 + [user.pk, active, user.pk, *pending]
        )
        keys_n, keys_s, pending_n, pending_s, uncapped = cursor.fetchone()
    count = keys_n + pending_n
    total = _money(keys_s) + _money(pending_s)
    if policy.max_total_limit is None:
        money_left = None
    else:
        money_left = Decimal(0) if uncapped else max(Decimal(0), policy.max_total_limit - total)
    return Headroom(
        active_keys=count,
        committed=total,
        keys_left=None if policy.max_active_keys is None else max(0, policy.max_active_keys - count),
        money_left=money_left,
        uncapped=uncapped,
    )


_HEADROOM_SQL = """
SELECT
  (SELECT COUNT(*) FROM keys_issuedkey WHERE owner_id = %s AND status = %s),
  (SELECT COALESCE(SUM(CASE WHEN pending_limit IS NOT NULL AND pending_limit > monthly_limit
                            THEN pending_limit ELSE monthly_limit END), 0)
     FROM keys_issuedkey WHERE owner_id = %s AND status = %s),
  (SELECT COUNT(*) FROM keys_issuance WHERE actor_id = %s AND state IN (%s, %s)),
  (SELECT COALESCE(SUM(monthly_limit), 0) FROM keys_issuance WHERE actor_id = %s AND state IN (%s, %s)),
  (SELECT COUNT(*) FROM keys_issuedkey WHERE owner_id = %s AND status = %s AND (monthly_limit = 0 OR pending_limit = 0))
  + (SELECT COUNT(*) FROM keys_issuance WHERE actor_id = %s AND state IN (%s, %s) AND monthly_limit = 0)
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
    elif room.uncapped:
        problems.append(UNCAPPED_MESSAGE)
    elif values["monthly_limit"] > room.money_left:
        problems.append(
            f"That would take your keys' monthly limits over your total of {money(policy.max_total_limit)} "
            f"({money(room.money_left)} left)."
        )
    if room.keys_left == 0:
        problems.append(f"You already have {room.active_keys} active keys, the most your policy allows.")
    return problems


UNCAPPED_MESSAGE = (
    "You hold a key with no monthly cap (an admin set it), which counts as your whole total: no other key "
    "can be added or raised until it has a cap or is revoked."
)


def limit_raise_problem(room: Headroom, policy: Policy, key, new_limit: Decimal) -> str:
    """Why changing `key`'s limit to `new_limit` would break its owner's total ("" if it would
    not). Only raises are checked; 0 is no cap, so from 0 every limit is a lowering, and while
    another key has no cap no limit may go up."""
    current = key.monthly_limit
    if policy.max_total_limit is None or current == 0 or new_limit <= current:
        return ""
    if room.uncapped - (1 if key.pending_limit == 0 else 0) > 0:
        return UNCAPPED_MESSAGE
    total = room.committed - current + new_limit
    if total > policy.max_total_limit:
        return (
            f"That would take your keys' monthly limits to {money(total)}, over your total of "
            f"{money(policy.max_total_limit)}."
        )
    return ""


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
