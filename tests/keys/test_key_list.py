"""My keys / All keys (issues 4 and 11): who sees which keys, filters, unsettled attempts listed
honestly, and keyset pages that never skip, repeat or reveal a key."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from keys.forms import new_nonce
from keys.models import Issuance, IssuedKey
from standin import Fault
from tests.keys.helpers import mint


# --- My keys --------------------------------------------------------------------------------------
def test_my_keys_lists_only_mine_newest_first(rclient, r2client, requester, requester2, standin):
    mint(rclient, requester, "first")
    mint(rclient, requester, "second")
    mint(r2client, requester2, "theirs")
    html = rclient.get("/keys/").content.decode()
    assert html.index(">second<") < html.index(">first<") and "theirs" not in html
    assert "manage none, completions write" in html and "active" in html


def test_the_new_key_is_marked_for_its_owner_only(rclient, r2client, requester, standin):
    key = mint(rclient, requester, name="fresh")
    html = rclient.get(f"/keys/?new={key.pk}").content.decode()
    assert f'<tr id="key-{key.pk}" class="new-key">' in html and "Your new key “fresh”" in html
    assert "Your new key" not in r2client.get(f"/keys/?new={key.pk}").content.decode()
    assert rclient.get("/keys/?new=x").status_code == 400


def test_unknown_outcomes_are_listed_honestly(rclient, requester, standin):
    standin.inject(Fault.status(502), method="POST", path="/v1/manage/apikey")
    rclient.post(
        "/keys/new/",
        {
            "name": "limbo",
            "monthly_limit": "5",
            "manage": "none",
            "completions": "write",
            "nonce": new_nonce(requester),
        },
    )
    html = rclient.get("/keys/").content.decode()
    assert "limbo" in html and "outcome unknown" in html and Issuance.objects.get().reference in html


def test_admin_sees_all_and_filters(aclient, rclient, r2client, requester, requester2, standin):
    mint(rclient, requester, "ritas")
    key = mint(r2client, requester2, "robs")
    key.status = "revoked"
    key.save()
    html = aclient.get("/keys/").content.decode()
    assert "ritas" in html and "robs" in html
    assert "robs" not in aclient.get("/keys/?owner=rita").content.decode()
    only_revoked = aclient.get("/keys/?status=revoked").content.decode()
    assert "robs" in only_revoked and "ritas" not in only_revoked


def test_home_links_to_keys_and_form(rclient):
    html = rclient.get("/").content.decode()
    assert 'href="/keys/"' in html and 'href="/keys/new/"' in html


# --- Paging the list ------------------------------------------------------------------------------
def make_issuances(owner, count: int, prefix: str, state: str) -> list[Issuance]:
    """`count` issuance records named `<prefix>-000`... in one statement, with no Requesty call."""
    return Issuance.objects.bulk_create(
        Issuance(
            nonce=f"{prefix}-{i}",
            actor=owner,
            name=f"{prefix}-{i:03d}",
            monthly_limit=5,
            manage="none",
            completions="write",
            state=state,
        )
        for i in range(count)
    )


def make_keys(owner, count: int, prefix: str, status: str = "active", tie: int = 7) -> list[IssuedKey]:
    """`count` keys made directly (no Requesty): every `tie` of them share one creation time, and
    time runs against id order, so only a (created_at, id) order pages them right."""
    issuances = make_issuances(owner, count, prefix, "issued")
    keys = IssuedKey.objects.bulk_create(
        IssuedKey(
            api_key_id=str(uuid.uuid4()),
            issuance=issuance,
            owner=owner,
            name=issuance.name,
            monthly_limit=5,
            manage="none",
            completions="write",
            status=status,
        )
        for issuance in issuances
    )
    base = timezone.now() - timedelta(days=1)
    for i, key in enumerate(keys):
        IssuedKey.objects.filter(pk=key.pk).update(created_at=base + timedelta(minutes=count - i // tie))
    return keys


def row_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="key-(\d+)">', response.content.decode())]


def link(response, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', response.content.decode())
    return found.group(1).replace("&amp;", "&") if found else None


def walk(client, url: str, rel: str = "next") -> list[list[int]]:
    """Follow the pager's links to the end: every page's row ids, in order."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(row_ids(response))
        url = link(response, rel)
        assert len(pages) < 10, "the pager loops"
    return pages


def newest_first(keys) -> list[int]:
    return list(
        IssuedKey.objects.filter(pk__in=[k.pk for k in keys])
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
    )


def test_admin_pages_through_every_key_once(aclient, requester, requester2):
    keys = make_keys(requester, 70, "rita") + make_keys(requester2, 50, "rob")
    first = aclient.get("/keys/")
    html = first.content.decode()
    assert len(row_ids(first)) == 50 and "Showing keys 1–50 of 120" in html and link(first, "prev") is None
    pages = walk(aclient, "/keys/")
    assert [len(p) for p in pages] == [50, 50, 20]
    assert sum(pages, []) == newest_first(keys)  # no gap, no duplicate, newest first, ties by id
    last = aclient.get(link(aclient.get(link(first, "next")), "next"))
    assert "Showing keys 101–120 of 120" in last.content.decode() and link(last, "next") is None
    assert walk(aclient, link(last, "prev"), rel="prev") == pages[1::-1]  # and back again
    oldest = aclient.get("/keys/?last=1")
    assert row_ids(oldest) == sum(pages, [])[-50:] and link(oldest, "next") is None
    assert "Showing keys 71–120 of 120" in oldest.content.decode()
    second = link(first, "next")
    for page_ids, url in zip(pages, ["/keys/", second, link(aclient.get(second), "next")], strict=True):
        page = aclient.get(url).content.decode()  # every page's rows load their spend
        assert all(f'hx-get="/keys/{pk}/spend/" hx-trigger="load"' in page for pk in page_ids)


def test_filters_survive_paging(aclient, requester, requester2):
    mine = make_keys(requester, 70, "rita")
    make_keys(requester, 10, "rita-old", status="revoked")
    make_keys(requester2, 60, "rob")
    first = aclient.get("/keys/?owner=rita&status=active")
    assert "Showing keys 1–50 of 70" in first.content.decode()
    older = link(first, "next")
    assert "owner=rita" in older and "status=active" in older
    pages = walk(aclient, "/keys/?owner=rita&status=active")
    assert sum(pages, []) == newest_first(mine)
    assert 'value="rita"' in aclient.get(older).content.decode()  # the form still shows the filter


def test_a_requester_never_pages_into_others_keys(rclient, requester, requester2):
    mine, theirs = make_keys(requester, 60, "rita"), make_keys(requester2, 60, "rob")
    pages = walk(rclient, "/keys/")
    assert sum(pages, []) == newest_first(mine)
    assert "of 60" in rclient.get("/keys/").content.decode()
    mine_ids = {k.pk for k in mine}
    for cursor in ("before", "after"):
        for other in (theirs[10].pk, theirs[-1].pk, 10**9):  # someone else's key, or none: the same answer
            response = rclient.get(f"/keys/?{cursor}={other}")
            assert response.status_code == 200 and set(row_ids(response)) <= mine_ids
            assert (
                row_ids(response) == pages[0] and "no longer points at a key you can see" in response.content.decode()
            )
    assert set(row_ids(rclient.get("/keys/?owner=rob"))) <= mine_ids  # owner is an admin filter
    for query in ("before=abc", "after=1.5", "before=-3", "before=0", f"before={10**30}", "before=1&after=2"):
        assert rclient.get(f"/keys/?{query}").status_code == 400, query


def test_unknown_outcomes_say_how_many_are_not_shown(rclient, requester):
    make_issuances(requester, 105, "limbo", "unknown")
    html = rclient.get("/keys/").content.decode()
    assert "105 key requests have an unknown outcome; showing the newest 100" in html
    assert html.count("the portal checks with Requesty every 15 minutes") == 100


def test_a_page_costs_the_same_queries_however_many_keys(aclient, requester, requester2, django_assert_max_num_queries):
    keys = make_keys(requester, 60, "rita") + make_keys(requester2, 60, "rob")
    for actor in (requester, requester2):  # unsettled issuances of several people
        make_issuances(actor, 10, f"limbo-{actor.username}", "unknown")
    IssuedKey.objects.filter(pk__in=[k.pk for k in keys[:15]]).update(revocation_failed_at=timezone.now())
    aclient.get("/keys/")  # the organization's usage, once per period (keys/usage.py): then one cache read
    for more in (0, 150):
        make_keys(requester2, more, f"more{more}")
        for query in ("", f"?before={keys[70].pk}", f"?after={keys[100].pk}", "?last=1", "?owner=rob&status=active"):
            with django_assert_max_num_queries(15):
                assert aclient.get(f"/keys/{query}").status_code == 200


def test_my_keys_with_500_keys_costs_what_it_does_with_50(rclient, r2client, requester, requester2, standin):
    """A page shows 50 keys: someone with 500 keys (120 of them expiring soon) gets the page through
    the same statements as someone with 50 (12 expiring): only ids, times and totals differ (issue
    17). The banner names the 10 keys that expire first either way; the totals are counts."""
    soon = timezone.now() + timedelta(days=2)
    for owner, count, expiring in ((requester, 50, 12), (requester2, 500, 120)):
        keys = make_keys(owner, count, owner.username)
        IssuedKey.objects.filter(pk__in=[k.pk for k in keys[:expiring]]).update(expires_at=soon)
    statements = []
    for client in (rclient, r2client):
        client.get("/keys/")  # the organization's usage, once per period (keys/usage.py): then one cache read
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/keys/")
        assert len(row_ids(response)) == 50 and response.content.decode().count('/#expiry">') == 10
        statements.append([re.sub(r"'[^']*'|\d+", "?", q["sql"]) for q in queries.captured_queries])
    assert statements[0] == statements[1]
    assert "of 500" in response.content.decode() and "120 of your keys expire soon" in response.content.decode()


# --- Keys whose revocation failed (admins) --------------------------------------------------------
def failures(keys, first_failed_at) -> list[IssuedKey]:
    """Flag `keys` as failed revocations, a minute apart from `first_failed_at` in the order given."""
    for i, key in enumerate(keys):
        IssuedKey.objects.filter(pk=key.pk).update(revocation_failed_at=first_failed_at + timedelta(minutes=i))
    return keys


def alert_box(html: str) -> str:
    found = re.search(r'<div class="alert" role="alert">(.*?)</div>', html, re.S)
    assert found, "no alert"
    return found.group(1)


def test_failed_revocations_are_counted_and_the_first_ten_listed(aclient, rclient, requester, requester2):
    """However many keys failed to be revoked, All keys names the 10 that failed first, says how
    many there are, and links to the list filtered to them: the same statements for 11 as for 150."""
    now = timezone.now()
    few = failures(make_keys(requester, 3, "few"), now)
    box = alert_box(aclient.get("/keys/").content.decode())
    text = "<p>3 keys the portal revoked (owner deactivated, or idle) could not be revoked in Requesty:</p>"
    assert box.startswith(text)
    assert box.count("<li>") == 3 and "Show all" not in box and "listed" not in box
    assert all(f'<a href="/keys/{k.pk}/">{k.name}</a> (rita, <code>{k.api_key_id}</code>)' in box for k in few)
    assert "could not be revoked" not in rclient.get("/keys/").content.decode()  # admins only

    seen = []
    for count in (11, 150):
        IssuedKey.objects.update(revocation_failed_at=None)
        flagged = failures(make_keys(requester2, count, f"stuck{count}")[::-1], now - timedelta(days=1))
        failures(few, now)  # failed later than all of those: not among the first ten
        total = count + 3
        aclient.get("/keys/")  # the organization's usage, once per period (keys/usage.py): then one cache read
        with CaptureQueriesContext(connection) as queries:
            html = aclient.get("/keys/").content.decode()
        seen.append([re.sub(r"'[^']*'|\d+", "?", q["sql"]) for q in queries.captured_queries])
        box = alert_box(html)
        assert box.startswith(
            f"<p>{total} keys the portal revoked (owner deactivated, or idle) could not be revoked in Requesty"
            " (the 10 that failed first are listed):</p>"
        )
        assert re.findall(r'<li><a href="/keys/(\d+)/">', box) == [str(k.pk) for k in flagged[:10]]
        assert f'<a href="/keys/?status=revocation_failed">Show all {total} in the list</a>.' in box
    assert seen[0] == seen[1]

    IssuedKey.objects.filter(pk=few[0].pk).update(status="revoked")  # no longer active: not a failure
    listed = aclient.get("/keys/?status=revocation_failed")
    assert "Showing keys 1–50 of 152, newest first." in listed.content.decode()
    assert '<option value="revocation_failed" selected>active, revocation failed</option>' in listed.content.decode()
    pages = walk(aclient, "/keys/?status=revocation_failed")
    failed_keys = IssuedKey.objects.filter(status="active", revocation_failed_at__isnull=False)
    assert sum(pages, []) == newest_first(failed_keys) and len(sum(pages, [])) == 152
    only_rita = aclient.get("/keys/?owner=rita&status=revocation_failed")
    assert set(row_ids(only_rita)) == {few[1].pk, few[2].pk}
