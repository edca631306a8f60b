"""A row of My keys / All keys as it is shown: its links, times and labels are worked out once a page
(keys/listing.show) and its cells are inline partials of keys/list.html that the key page shares,
so the markup is pinned here, for each kind of key, on the page and as the row a revocation swaps in;
and a page costs the same statements whether it shows two rows or fifty."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext

from keys.models import IssuedKey
from standin import Fault
from tests.keys.helpers import HTMX, frozen_clock
from tests.keys.spend_helpers import ORG_USAGE, issued, spend

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CREATED = datetime(2026, 11, 20, 9, 5, 7, 123456, tzinfo=UTC)
CREATED_CELL = (
    '<td data-label="Created (UTC)"><time datetime="2026-11-20T09:05:07.123456+00:00" data-local>'
    "2026-11-20 09:05</time></td>"
)
clock = frozen_clock(NOW, autouse=True, recorded_usage=True)


def flat(html: str) -> str:
    """Whitespace runs as one space: the markup is pinned, not the template's line breaks."""
    return " ".join(html.split())


def row(html: str, key: IssuedKey) -> str:
    found = re.search(rf'<tr id="key-{key.pk}"[ >].*?</tr>', html, re.S)
    assert found, f"no row for key {key.pk}"
    return flat(found.group(0))


def made(standin, owner, name: str, limit: str, created: datetime = CREATED, **fields) -> IssuedKey:
    key = issued(standin, owner, name, limit, **fields)
    IssuedKey.objects.filter(pk=key.pk).update(created_at=created)
    key.refresh_from_db()
    return key


def revoke_cell(key: IssuedKey, name: str) -> str:
    return (
        f'<a href="/keys/{key.pk}/revoke/" hx-get="/keys/{key.pk}/revoke/" hx-target="closest td" '
        f'hx-swap="innerHTML">Revoke<span class="visually-hidden"> “{name}”</span></a>'
    )


def test_rows_with_the_organization_usage(standin, requester, rclient):
    plain = made(standin, requester, "plain", "10")
    hostile_name = '<img src=x onerror=alert(1)> & "q" {{x}}'
    hostile = made(standin, requester, hostile_name, "0", created=CREATED.replace(microsecond=0))
    revoked = made(standin, requester, "old", "5", status="revoked")
    spend(standin, plain, "2.50", NOW.date() - timedelta(days=1))
    spend(standin, hostile, "0.0012", NOW.date())
    html = rclient.get("/keys/").content.decode()
    assert row(html, plain) == flat(f"""
        <tr id="key-{plain.pk}">
        <td data-label="Name"><span><a href="/keys/{plain.pk}/">plain</a></span></td>
        <td data-label="Requesty key id"><code>{plain.api_key_id}</code></td>
        <td data-label="Permissions">manage none, completions write</td>
        <td data-label="Monthly limit">$10.00</td>
        <td data-label="Spend this month"> <div class="spend"><progress max="100" value="25"
        aria-label="Spend this month for plain">25%</progress> <span>$2.50 of $10.00 (25%)</span> </div> </td>
        <td data-label="Last used (UTC)"><time datetime="2026-11-22">2026-11-22</time></td>
        <td data-label="Status"><div><span class="status status-active">active</span></div></td>
        {CREATED_CELL}
        <td class="actions"> {revoke_cell(plain, "plain")}</td>
        </tr>""")
    escaped = "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot; {{x}}"
    assert row(html, hostile) == flat(f"""
        <tr id="key-{hostile.pk}">
        <td data-label="Name"><span><a href="/keys/{hostile.pk}/">{escaped}</a></span></td>
        <td data-label="Requesty key id"><code>{hostile.api_key_id}</code></td>
        <td data-label="Permissions">manage none, completions write</td>
        <td data-label="Monthly limit">No cap</td>
        <td data-label="Spend this month"> <div class="spend"><progress max="100" value="0"
        aria-label="Spend this month for {escaped}">0%</progress> <span>$0.0012 (no cap)</span> </div> </td>
        <td data-label="Last used (UTC)"><time datetime="2026-11-23">2026-11-23</time></td>
        <td data-label="Status"><div><span class="status status-active">active</span></div></td>
        <td data-label="Created (UTC)"><time datetime="2026-11-20T09:05:07+00:00" data-local>2026-11-20
        09:05</time></td>
        <td class="actions"> {revoke_cell(hostile, escaped)}</td>
        </tr>""")
    assert row(html, revoked) == flat(f"""
        <tr id="key-{revoked.pk}">
        <td data-label="Name"><span><a href="/keys/{revoked.pk}/">old</a></span></td>
        <td data-label="Requesty key id"><code>{revoked.api_key_id}</code></td>
        <td data-label="Permissions">manage none, completions write</td>
        <td data-label="Monthly limit">$5.00</td>
        <td data-label="Spend this month"> <div class="spend"><progress max="100" value="0"
        aria-label="Spend this month for old">0%</progress> <span>$0.00 of $5.00 (0%)</span> </div> </td>
        <td data-label="Last used (UTC)">Not in the last 61 days</td>
        <td data-label="Status"><div><span class="status status-revoked">revoked</span></div></td>
        {CREATED_CELL}
        <td class="actions"> </td>
        </tr>""")


def test_rows_when_the_organization_usage_failed(standin, requester, requester2, rclient, aclient):
    active = made(standin, requester, "laptop", "25", last_used_on=NOW.date() - timedelta(days=70))
    deleted = made(standin, requester, "gone", "5", status="deleted")
    orphan = made(standin, requester2, "orphan", "5")
    IssuedKey.objects.filter(pk=orphan.pk).update(owner=None)
    standin.inject(Fault.status(503), method="GET", path=ORG_USAGE)
    html = rclient.get(f"/keys/?new={active.pk}").content.decode()
    assert "could not be loaded" in html
    assert row(html, active) == flat(f"""
        <tr id="key-{active.pk}" class="new-key">
        <td data-label="Name"><span><a href="/keys/{active.pk}/">laptop</a> <strong class="tag">new</strong></span></td>
        <td data-label="Requesty key id"><code>{active.api_key_id}</code></td>
        <td data-label="Permissions">manage none, completions write</td>
        <td data-label="Monthly limit">$25.00</td>
        <td data-label="Spend this month"> <div hx-get="/keys/{active.pk}/spend/" hx-trigger="load"
        hx-swap="outerHTML"><span class="muted">Loading spend…</span> <a href="/keys/{active.pk}/"
        class="muted">details</a></div> </td>
        <td data-label="Last used (UTC)"><time datetime="2026-09-14">2026-09-14</time></td>
        <td data-label="Status"><div><span class="status status-active">active</span></div></td>
        {CREATED_CELL}
        <td class="actions"> {revoke_cell(active, "laptop")}</td>
        </tr>""")
    gone = flat(f"""
        <td data-label="Requesty key id"><code>{deleted.api_key_id}</code></td>
        <td data-label="Permissions">manage none, completions write</td>
        <td data-label="Monthly limit">$5.00</td>
        <td data-label="Spend this month"> —</td>
        <td data-label="Last used (UTC)">—</td>
        <td data-label="Status"><div><span class="status status-deleted">deleted outside the portal</span></div></td>
        {CREATED_CELL}
        <td class="actions"> </td>
        </tr>""")
    name_cell = f'<td data-label="Name"><span><a href="/keys/{deleted.pk}/">gone</a></span></td>'
    assert row(html, deleted) == flat(f'<tr id="key-{deleted.pk}"> {name_cell} {gone}')
    everyone = aclient.get("/keys/").content.decode()  # admins see an owner column, and keys with no owner
    owner_cell = '<td data-label="Owner">rita</td>'
    assert row(everyone, deleted) == flat(f'<tr id="key-{deleted.pk}"> {name_cell}{owner_cell} {gone}')
    orphan_cells = f'<a href="/keys/{orphan.pk}/">orphan</a></span></td><td data-label="Owner">deleted user</td>'
    assert orphan_cells in row(everyone, orphan)


def test_the_row_a_revocation_swaps_in(standin, requester, rclient):
    key = made(standin, requester, "laptop", "25")
    standin.inject(Fault.status(503), method="DELETE")
    failed = flat(rclient.post(f"/keys/{key.pk}/revoke/", **HTMX).content.decode())
    assert failed.startswith(f'<tr id="key-{key.pk}"> <td data-label="Name"><span><a href="/keys/{key.pk}/">laptop')
    assert failed.endswith(
        '<td data-label="Status"><div><span class="status status-active">active</span></div></td> '
        '<td data-label="Created (UTC)"><time datetime="2026-11-20T09:05:07.123456+00:00" data-local>2026-11-20 09:05'
        '</time></td> <td class="actions"><p class="field-error" role="alert">Requesty did not confirm in time '
        "whether it could revoke the key. Nothing was changed in the portal; check again in a minute before "
        f"retrying.</p> {revoke_cell(key, 'laptop')}</td> </tr>"
    ), failed
    done = flat(rclient.post(f"/keys/{key.pk}/revoke/", **HTMX).content.decode())
    assert done.endswith(
        '<td data-label="Status"><div><span class="status status-revoked">revoked</span><br>'
        '<span role="status">Revoked.</span></div></td> <td data-label="Created (UTC)"><time '
        'datetime="2026-11-20T09:05:07.123456+00:00" data-local>2026-11-20 09:05</time></td> '
        '<td class="actions"> </td> </tr>'
    ), done


def test_the_key_page_shows_the_same_spend_and_last_used_cells(standin, requester, rclient):
    key = made(standin, requester, "laptop", "10")
    spend(standin, key, "2.50", NOW.date() - timedelta(days=1))
    page = flat(rclient.get(f"/keys/{key.pk}/").content.decode())
    assert (
        '<dt>Spend this month</dt><dd> <div class="spend"><progress max="100" value="25" aria-label="Spend this '
        'month for laptop">25%</progress> <span>$2.50 of $10.00 (25%)</span> </div> </dd> '
        '<dt>Last used (UTC)</dt><dd><time datetime="2026-11-22">2026-11-22</time></dd>'
    ) in page
    spend_only = flat(rclient.get(f"/keys/{key.pk}/spend/", **HTMX).content.decode())
    assert spend_only == flat(
        '<div class="spend"> <progress max="100" value="25" aria-label="Spend this month for laptop">25%</progress> '
        "<span>$2.50 of $10.00 (25%)</span> </div>"
    )
    from django.core.cache import cache

    cache.clear()
    standin.inject(Fault.status(503), method="GET", path=ORG_USAGE)
    page = flat(rclient.get(f"/keys/{key.pk}/").content.decode())
    assert (
        f'<dt>Spend this month</dt><dd> <div hx-get="/keys/{key.pk}/spend/" hx-trigger="load" hx-swap="outerHTML">'
        f'<span class="muted">Loading spend…</span> <a href="/keys/{key.pk}/" class="muted">details</a></div> '
        "<p class=\"muted\">Requesty's organization usage could not be loaded, so this key's spend is asked for "
        "on its own.</p></dd> <dt>Last used (UTC)</dt><dd>—</dd>"
    ) in page


def statements(client, url: str) -> tuple[list[str], str]:
    client.get(url)  # the organization's usage, once per period (keys/usage.py): then one cache read
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return [re.sub(r"'[^']*'|\d+", "?", q["sql"]) for q in queries.captured_queries], response.content.decode()


def test_a_page_of_fifty_rows_costs_the_statements_of_two(standin, requester, requester2, rclient, r2client, aclient):
    """Every row's cells come from the page's own queries: no statement per row, whatever the row
    shows (spend or not, last used or not, any status, an owner column for admins)."""
    for i, status in enumerate(["active", "revoked"]):
        made(standin, requester, f"few-{i}", "10", status=status)
    many = [
        made(
            standin, requester2, f"many-{i}", str(i % 3 * 10), status=("active", "revoked", "deleted", "expired")[i % 4]
        )
        for i in range(50)
    ]
    for key in many[::3]:
        spend(standin, key, "1.25", NOW.date())
    for fault in (False, True):
        if fault:
            from django.core.cache import cache

            cache.clear()
            standin.inject(Fault.status(503), method="GET", path=ORG_USAGE)
        few, few_html = statements(rclient, "/keys/")
        lots, lots_html = statements(r2client, "/keys/")
        assert few_html.count('<tr id="key-') == 2 and lots_html.count('<tr id="key-') == 50
        assert few == lots
        few, few_html = statements(aclient, "/keys/?owner=rita")
        lots, lots_html = statements(aclient, "/keys/?owner=rob")
        assert few_html.count('<tr id="key-') == 2 and lots_html.count('<tr id="key-') == 50
        assert few == lots
