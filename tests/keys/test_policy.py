"""Spending policy per group, its enforcement, and races on the caps (issue 5, threats 8, 11, 12).

The rate limit and the bound on refusals: test_rate_limits.py."""

from __future__ import annotations

from decimal import Decimal
from functools import partial

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from keys import policy
from keys.forms import new_nonce
from keys.models import Issuance, IssuedKey, SpendingPolicy
from portal.audit.models import AuditEvent
from standin import Fault
from tests.keys.helpers import HTMX, attempt, creates, key_of, post_mint
from tests.keys.spend_helpers import issued
from tests.threads import run_together


def group_policy(name, **values) -> Group:
    group = Group.objects.create(name=name)
    defaults = {"max_key_limit": 50, "max_total_limit": 100, "max_active_keys": 3, "max_completions": "write"}
    SpendingPolicy.objects.create(group=group, **{**defaults, **values})
    return group


# --- Resolution -----------------------------------------------------------------------------------
def test_no_group_gets_the_default_policy(requester, settings):
    settings.PORTAL_MAX_ACTIVE_KEYS = 12
    p = policy.resolve(requester)
    assert (p.max_key_limit, p.max_total_limit, p.max_active_keys) == (Decimal(100), Decimal(500), 12)
    assert p.completions_levels == ("none", "read", "write") and not p.manage_requestable
    assert p.max_active_keys >= 10  # generous enough for everyday use


def test_one_group(requester):
    requester.groups.add(group_policy("ml", max_key_limit=20, max_completions="read"))
    p = policy.resolve(requester)
    assert p.max_key_limit == 20 and p.completions_levels == ("none", "read")


def test_several_groups_take_the_most_generous_value_of_each(requester):
    requester.groups.add(
        group_policy("a", max_key_limit=20, max_total_limit=500, max_active_keys=2, max_completions="none")
    )
    requester.groups.add(
        group_policy(
            "b",
            max_key_limit=80,
            max_total_limit=90,
            max_active_keys=5,
            max_completions="read",
            manage_requestable=True,
        )
    )
    p = policy.resolve(requester)
    assert (p.max_key_limit, p.max_total_limit, p.max_active_keys, p.max_completions) == (80, 500, 5, "read")
    assert p.manage_requestable


def test_resolution_reads_exact_cents_and_only_the_users_own_groups(requester, requester2, django_assert_num_queries):
    requester.groups.add(group_policy("cents", max_key_limit=Decimal("12.34"), max_total_limit=Decimal("56.78")))
    requester2.groups.add(group_policy("other", max_key_limit=999, max_total_limit=999, manage_requestable=True))
    with django_assert_num_queries(2):  # the user's permissions (own and groups', one query), then their policies
        p = policy.resolve(requester)
    assert (p.max_key_limit, p.max_total_limit) == (Decimal("12.34"), Decimal("56.78"))
    assert isinstance(p.max_key_limit, Decimal) and p.manage_requestable is False


def test_admins_have_no_caps(admin_user):
    assert policy.resolve(admin_user).is_admin and policy.violations(admin_user, {"manage": "write"}) == []


# --- The form shows what is left ------------------------------------------------------------------
def test_form_shows_what_is_left(rclient, requester, standin):
    requester.groups.add(group_policy("t", max_total_limit=100, max_active_keys=3))
    assert post_mint(rclient, requester, monthly_limit="40").status_code == 200
    html = rclient.get("/keys/new/").content.decode()
    assert "<strong>$40.00 of $100.00</strong> used by 1 active key." in html
    assert "A new key can have up to $50.00 a month; you can create 2 more keys." in html
    after_a_mistake = post_mint(rclient, requester, name="").content.decode()
    assert "<strong>$40.00 of $100.00</strong>" in after_a_mistake  # the meter stays after an error


def test_a_spent_budget_is_explained_never_prefilled_with_an_invalid_limit(rclient, requester, standin):
    """Issue 13: a key using the whole total used to prefill 0, "up to $0", and fail on Create."""
    requester.groups.add(group_policy("t", max_key_limit=500, max_total_limit=500))
    assert post_mint(rclient, requester, name="big", monthly_limit="500").status_code == 200
    for url in ("/keys/new/", "/keys/new/?monthly_limit=50&name=more"):
        html = rclient.get(url).content.decode()
        assert 'name="monthly_limit" value=""' in html, url  # empty, not 0
        assert "<strong>$500.00 of $500.00</strong> used by 1 active key." in html
        assert "Your keys already use your whole monthly budget" in html and ">big</a>: $500.00 a month" in html
        assert "up to $0" not in html
    assert "Ask an admin for more" in rclient.get("/keys/new/?monthly_limit=50&name=more").content.decode()


def test_form_offers_only_allowed_completions(rclient, requester):
    requester.groups.add(group_policy("ro", max_completions="read"))
    html = rclient.get("/keys/new/").content.decode()
    select = html[html.index('id="id_completions"') : html.index("</select>", html.index('id="id_completions"'))]
    assert 'value="write"' not in select and 'value="read"' in select


# --- Enforcement ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values,phrase",
    [
        ({"monthly_limit": "51"}, "at most $50.00 per key"),
        ({"completions": "write"}, "completions up to “read”"),
    ],
)
def test_beyond_policy_is_refused_and_offers_an_approval(rclient, requester, standin, values, phrase):
    requester.groups.add(group_policy("g", max_completions="read"))
    response = post_mint(rclient, requester, **({"completions": "read"} | values))
    html = response.content.decode()
    assert response.status_code == 403 and phrase in html and "Request approval" in html
    assert creates(standin) == [] and Issuance.objects.count() == 0
    assert AuditEvent.objects.get(action="mint.denied").outcome == "denied"


def test_total_and_count_caps(rclient, requester, standin):
    requester.groups.add(group_policy("g", max_total_limit=30, max_active_keys=2))
    assert post_mint(rclient, requester, monthly_limit="20").status_code == 200
    over_total = post_mint(rclient, requester, monthly_limit="11")
    assert over_total.status_code == 403 and "$10.00 left" in over_total.content.decode()
    assert post_mint(rclient, requester, monthly_limit="10").status_code == 200
    over_count = post_mint(rclient, requester, monthly_limit="1")
    assert over_count.status_code == 403 and "2 active keys" in over_count.content.decode()
    assert len(creates(standin)) == 2


def test_revoked_keys_free_their_share(rclient, requester, standin):
    requester.groups.add(group_policy("g", max_active_keys=1))
    post_mint(rclient, requester)
    IssuedKey.objects.update(status="revoked")
    assert post_mint(rclient, requester).status_code == 200


def test_unknown_outcomes_count_against_the_caps(rclient, requester, standin):
    from standin import Fault

    requester.groups.add(group_policy("g", max_active_keys=1))
    standin.inject(Fault.status(502), method="POST", path="/v1/manage/apikey")
    post_mint(rclient, requester)
    assert post_mint(rclient, requester).status_code == 403


def test_headroom_counts_keys_and_unsettled_attempts_in_one_statement(requester, django_assert_num_queries):
    """One statement, one snapshot: a mint turning its attempt into a key between two separate
    queries would otherwise be counted in neither (seen as an extra key in the race test below)."""
    requester.groups.add(group_policy("g", max_active_keys=5, max_total_limit=100))
    key_of(attempt(requester, "k1", "10"), "id-1", monthly_limit=Decimal("12.50"))
    attempt(requester, "k2", "5", state="requested")
    attempt(requester, "k3", "2", state="unknown")
    attempt(requester, "k4", "40", state="rejected")
    pol = policy.resolve(requester)
    with django_assert_num_queries(1):
        room = policy.headroom(requester, pol)
    # The key counts at its current limit (12.50, not the 10 it was issued with), and once.
    assert (room.active_keys, room.committed) == (3, Decimal("19.50"))
    assert (room.keys_left, room.money_left) == (2, Decimal("80.50"))


def test_headroom_counts_the_higher_of_limit_and_pending_limit(requester, django_assert_num_queries):
    """A limit change in flight counts at the higher of both limits until Requesty confirmed it: a
    raise whose outcome is unknown may hold upstream, a lowering may not have happened yet."""
    requester.groups.add(group_policy("g", max_total_limit=100))
    for n, (limit, pending) in enumerate([("10", Decimal(30)), ("20", Decimal(5)), ("7.50", None)]):
        key_of(attempt(requester, f"k{n}", limit), f"id-{n}", pending_limit=pending)
    pol = policy.resolve(requester)
    with django_assert_num_queries(1):
        room = policy.headroom(requester, pol)
    assert (room.active_keys, room.committed, room.money_left) == (3, Decimal("57.50"), Decimal("42.50"))


def test_headroom_of_a_new_user_is_empty(requester):
    room = policy.headroom(requester, policy.resolve(requester))
    assert (room.active_keys, room.committed) == (0, Decimal(0))


@pytest.mark.parametrize("forged", ["write", "read", "WRITE", " write", ["none", "write"]])
def test_forged_manage_is_denied_even_when_requestable(rclient, requester, standin, forged):
    requester.groups.add(group_policy("g", manage_requestable=False))
    response = post_mint(rclient, requester, manage=forged)
    assert response.status_code == 403 and "Request approval" not in response.content.decode()
    assert creates(standin) == []
    assert AuditEvent.objects.exclude(action="user.access_changed").get().action == "mint.denied"


def test_manage_requestable_turns_manage_into_an_approval_offer(rclient, requester, standin):
    requester.groups.add(group_policy("g", manage_requestable=True))
    response = post_mint(rclient, requester, manage="read")
    assert response.status_code == 403 and "Request approval" in response.content.decode()
    assert creates(standin) == []


def test_the_policy_is_checked_again_when_minting(rclient, requester, standin, monkeypatch):
    """The form's check is only for the page; mint_key re-checks under the lock."""
    import types

    import keys.forms

    requester.groups.add(group_policy("g", max_key_limit=5))
    blind = types.SimpleNamespace(**{n: getattr(policy, n) for n in dir(policy) if not n.startswith("__")})
    blind.violations = lambda *a, **k: []
    monkeypatch.setattr(keys.forms, "policy", blind)  # the form no longer sees the policy...
    response = post_mint(rclient, requester, monthly_limit="6")
    assert response.status_code == 403 and creates(standin) == []  # ...but minting does
    assert "at most $5.00" in response.content.decode()


# --- Races on PostgreSQL --------------------------------------------------------------------------
def _together(user, posts: list[tuple[str, dict]]) -> list[int]:
    """POST each (url, data) at the same moment, each from its own client and connection."""
    clients = []
    for _ in posts:
        client = Client()
        client.force_login(user)
        clients.append(client)
    calls = [partial(client.post, url, data, **HTMX) for client, (url, data) in zip(clients, posts, strict=True)]
    return [response.status_code for response in run_together(*calls)]


def _fire(user, n, **values) -> list[int]:
    """n simultaneous mints by one user."""
    data = {"name": "race", "monthly_limit": "10", "manage": "none", "completions": "write"}
    return _together(user, [("/keys/new/", {**data, "nonce": new_nonce(user), **values}) for _ in range(n)])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_mints_cannot_exceed_the_key_cap(standin):
    user = User.objects.create_user("racer", password="x")
    user.groups.add(group_policy("cap", max_active_keys=3, max_total_limit=1000))
    statuses = _fire(user, 8)
    assert statuses.count(200) == 3 and len(creates(standin)) == 3
    assert IssuedKey.objects.filter(owner=user).count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_mints_cannot_exceed_the_rate_limit(standin, settings):
    settings.PORTAL_MINTS_PER_HOUR = 2
    user = User.objects.create_user("racer", password="x")
    statuses = _fire(user, 6)
    assert statuses.count(200) == 2 and statuses.count(429) == 4
    assert len(creates(standin)) == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_limit_raises_cannot_exceed_the_total_cap(standin):
    """Six raises of +20 on six different keys (60 held, total cap 100): only two fit. Each checks
    and reserves under the user's lock before calling Requesty, so the others see the reservations."""
    user = User.objects.create_user("racer", password="x")
    user.groups.add(group_policy("cap", max_key_limit=50, max_total_limit=100, max_active_keys=10))
    keys = [issued(standin, user, f"held-{n}", "10") for n in range(6)]
    # Slow answers keep every raise in flight together, as with a slow Requesty.
    standin.inject(Fault.delay(0.3), method="POST", path="/v1/manage/apikey/", times=len(keys))
    _together(user, [(f"/keys/{key.pk}/limit/", {"monthly_limit": "30"}) for key in keys])
    limit_calls = [c for c in standin.calls if c.method == "POST" and c.path.endswith("/limit")]
    assert len(limit_calls) == 2
    held = sorted(k["monthly_limit"] for k in standin.keys.values())
    assert sum(held) == 100 and held == [10, 10, 10, 10, 30, 30]
    assert sum(IssuedKey.objects.filter(owner=user).values_list("monthly_limit", flat=True)) == 100
    assert not IssuedKey.objects.filter(pending_limit__isnull=False).exists()
    assert AuditEvent.objects.filter(action="key.limit_failed", outcome="denied").count() == 4
