"""Spending policies and onboarding templates edited in Django's admin: every add, change and
delete (single, bulk, or with the policy's group) is one event in the hash-chained audit log,
appended in the same transaction as the change. Users and groups: test_admin_access_audit.py."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from keys.models import OnboardingTemplate, SpendingPolicy
from portal.audit import admin as audit_admin
from portal.audit import chain
from portal.audit.models import AuditEvent
from tests.audit.helpers import admin_event, admin_post, appended, delete_selected, head_seq

POLICIES = "/admin/keys/spendingpolicy/"
TEMPLATES = "/admin/keys/onboardingtemplate/"


def make_policy(name: str = "Engineering", **values) -> SpendingPolicy:
    values = {
        "max_key_limit": Decimal("50.00"),
        "max_total_limit": Decimal("200.00"),
        "max_active_keys": 5,
        "max_completions": "write",
        "manage_requestable": False,
        **values,
    }
    return SpendingPolicy.objects.create(group=Group.objects.create(name=name), **values)


def make_template(slug: str = "data-team", **values) -> OnboardingTemplate:
    values = {"name_pattern": "{username}-dev", "monthly_limit": Decimal("25.00"), "manage": "none", **values}
    return OnboardingTemplate.objects.create(slug=slug, completions="write", **values)


def policy_form(policy: SpendingPolicy, **changes) -> dict:
    form = {
        "group": policy.group_id,
        "max_key_limit": "50",  # the same value as stored 50.00: not a change
        "max_total_limit": "200.00",
        "max_active_keys": "5",
        "max_completions": "write",
        **changes,
    }
    return {k: v for k, v in form.items() if v is not None}  # an unticked checkbox is not sent


def template_form(template: OnboardingTemplate, **changes) -> dict:
    return {
        "slug": template.slug,
        "name_pattern": template.name_pattern,
        "monthly_limit": str(template.monthly_limit),
        "manage": template.manage,
        "completions": template.completions,
        "return_url": template.return_url,
        "description": template.description,
        **changes,
    }


# --- Spending policies ----------------------------------------------------------------------------
def test_creating_a_policy_is_one_event_with_its_values(suclient, superuser):
    group = Group.objects.create(name="Engineering")
    form = {
        "group": group.pk,
        "max_key_limit": "75",
        "max_total_limit": "300",
        "max_active_keys": "4",
        "max_completions": "read",
        "manage_requestable": "on",
    }
    event = admin_event(suclient, f"{POLICIES}add/", form, "policy.changed", superuser)
    assert event.detail == (
        "policy of group 'Engineering' created: group: 'Engineering'; max_key_limit: 75.00; "
        "max_total_limit: 300.00; max_active_keys: 4; max_completions: read; manage_requestable: yes; max_key_days: 90"
    )


def test_changing_a_policy_names_each_changed_field_from_old_to_new(suclient, superuser):
    policy = make_policy()
    since = head_seq()
    # A save that changes nothing (50 is the stored 50.00) appends nothing.
    admin_post(suclient, f"{POLICIES}{policy.pk}/change/", policy_form(policy))
    assert appended(since) == []

    changed = policy_form(policy, max_key_limit="500", max_active_keys="10", manage_requestable="on")
    event = admin_event(suclient, f"{POLICIES}{policy.pk}/change/", changed, "policy.changed", superuser)
    assert event.detail == (
        "policy of group 'Engineering': max_key_limit: 50.00 -> 500.00; max_active_keys: 5 -> 10; "
        "manage_requestable: no -> yes"
    )
    policy.refresh_from_db()
    assert policy.max_key_limit == Decimal("500.00")


def test_moving_a_policy_to_another_group_names_both(suclient, superuser):
    policy = make_policy()
    other = Group.objects.create(name="Sales")
    form = policy_form(policy, group=other.pk)
    event = admin_event(suclient, f"{POLICIES}{policy.pk}/change/", form, "policy.changed", superuser)
    assert event.detail == "policy of group 'Sales': group: 'Engineering' -> 'Sales'"


def test_deleting_a_policy_records_what_it_was(suclient, superuser):
    policy = make_policy()
    event = admin_event(suclient, f"{POLICIES}{policy.pk}/delete/", {"post": "yes"}, "policy.deleted", superuser)
    assert not SpendingPolicy.objects.exists()
    assert event.detail.startswith("policy of group 'Engineering' deleted; it was group: 'Engineering'; ")
    assert "max_key_limit: 50.00; max_total_limit: 200.00; max_active_keys: 5" in event.detail


def test_bulk_delete_records_one_event_per_policy(suclient, superuser):
    first, second, kept = make_policy("Engineering"), make_policy("Sales"), make_policy("Support")
    since = head_seq()
    delete_selected(suclient, POLICIES, [first.pk, second.pk])
    assert list(SpendingPolicy.objects.all()) == [kept]
    events = appended(since)
    assert [e.action for e in events] == ["policy.deleted", "policy.deleted"]
    assert [e.detail.split(" deleted;")[0] for e in events] == [
        "policy of group 'Engineering'",
        "policy of group 'Sales'",
    ]
    assert {e.actor_id for e in events} == {superuser.pk}
    assert chain.verify().ok


def test_deleting_a_group_records_its_policy_deletion(suclient, superuser):
    policy = make_policy()
    url = f"/admin/auth/group/{policy.group_id}/delete/"
    event = admin_event(suclient, url, {"post": "yes"}, "policy.deleted", superuser)
    assert not SpendingPolicy.objects.exists()
    assert event.detail.startswith("policy of group 'Engineering' deleted with its group; it was ")
    # A group without a policy goes without an event.
    bare = Group.objects.create(name="No policy")
    since = head_seq()
    delete_selected(suclient, "/admin/auth/group/", [bare.pk])
    assert appended(since) == []


@pytest.mark.parametrize("bulk", [False, True])
def test_a_failed_audit_append_undoes_the_change(suclient, monkeypatch, bulk):
    """Same transaction: no change to the caps without its event, and no event without the
    change (the bulk delete fails on its second event: the first must not stay behind)."""
    first, second = make_policy("Engineering"), make_policy("Sales")
    since = head_seq()
    record, calls = audit_admin.chain.record, []

    def second_append_fails(*args, **kwargs):
        calls.append(args)
        if len(calls) == (2 if bulk else 1):
            raise RuntimeError("audit append failed")
        return record(*args, **kwargs)

    monkeypatch.setattr(audit_admin.chain, "record", second_append_fails)
    with pytest.raises(RuntimeError, match="audit append failed"):
        if bulk:
            selected = [first.pk, second.pk]
            delete_selected(suclient, POLICIES, selected)
        else:
            admin_post(suclient, f"{POLICIES}{first.pk}/change/", policy_form(first, max_key_limit="999"))
    assert len(calls) == (2 if bulk else 1)
    assert SpendingPolicy.objects.count() == 2
    first.refresh_from_db()
    assert first.max_key_limit == Decimal("50.00")
    assert appended(since) == []


# --- Onboarding templates -------------------------------------------------------------------------
def test_template_create_change_and_delete_are_each_one_event(suclient, superuser):
    form = {
        "slug": "data-team",
        "name_pattern": "{username}-dev",
        "monthly_limit": "25",
        "manage": "none",
        "completions": "write",
        "return_url": "",
        "description": "",
    }
    event = admin_event(suclient, f"{TEMPLATES}add/", form, "template.changed", superuser)
    assert event.detail.startswith("template 'data-team' created: slug: 'data-team'; name_pattern: '{username}-dev'; ")
    template = OnboardingTemplate.objects.get()

    since = head_seq()
    admin_post(suclient, f"{TEMPLATES}{template.pk}/change/", template_form(template))
    assert appended(since) == []  # nothing changed, nothing appended

    changes = {"monthly_limit": "40", "return_url": "https://wiki.example.com/next", "description": "evil\u202egnp\nx"}
    form = template_form(template, **changes)
    event = admin_event(suclient, f"{TEMPLATES}{template.pk}/change/", form, "template.changed", superuser)
    assert event.detail == (
        "template 'data-team': monthly_limit: 25.00 -> 40.00; "
        "return_url: '' -> 'https://wiki.example.com/next'; description: '' -> 'evil\\u202egnp\\nx'"
    )

    url = f"{TEMPLATES}{template.pk}/delete/"
    event = admin_event(suclient, url, {"post": "yes"}, "template.deleted", superuser)
    assert event.detail.startswith("template 'data-team' deleted; it was slug: 'data-team'; ")
    assert "return_url: 'https://wiki.example.com/next'" in event.detail


def test_bulk_delete_records_one_event_per_template(suclient, superuser):
    first, second = make_template("alpha"), make_template("beta")
    since = head_seq()
    delete_selected(suclient, TEMPLATES, [first.pk, second.pk])
    assert not OnboardingTemplate.objects.exists()
    events = appended(since)
    assert [(e.action, e.detail.split(" deleted;")[0]) for e in events] == [
        ("template.deleted", "template 'alpha'"),
        ("template.deleted", "template 'beta'"),
    ]
    assert {e.actor_id for e in events} == {superuser.pk}
    assert chain.verify().ok


def test_a_long_detail_is_cut_visibly(suclient, superuser):
    template = make_template()
    changes = {
        "name_pattern": "n" * 64,
        "return_url": "https://wiki.example.com/" + "a" * 175,
        "description": "d" * 200,
    }
    form = template_form(template, **changes)
    event = admin_event(suclient, f"{TEMPLATES}{template.pk}/change/", form, "template.changed", superuser)
    assert len(event.detail) == 500 and event.detail.endswith("…")
    assert "return_url: '' -> 'https://wiki.example.com/aaa" in event.detail  # fields in model order


# --- In the audit log -----------------------------------------------------------------------------
def test_admin_changes_show_on_the_audit_page_and_its_filters(suclient):
    policy = make_policy()
    admin_post(suclient, f"{POLICIES}{policy.pk}/change/", policy_form(policy, max_key_limit="500"))
    event = AuditEvent.objects.get(action="policy.changed")

    page = suclient.get("/audit/?action=policy.changed").content.decode()
    assert f'href="/audit/events/{event.seq}/"' in page
    assert '<code class="muted">policy.changed</code>' in page
    for action in (
        "policy.changed",
        "policy.deleted",
        "template.changed",
        "template.deleted",
        "user.access_changed",
        "user.password_changed",
        "user.deleted",
        "group.permissions_changed",
    ):
        assert f'<option value="{action}"' in page
    detail = suclient.get(f"/audit/events/{event.seq}/").content.decode()
    assert "policy of group &#x27;Engineering&#x27;: max_key_limit: 50.00 -&gt; 500.00" in detail
    exported = b"".join(suclient.get("/audit/export.csv?action=policy.changed").streaming_content).decode()
    assert "max_key_limit: 50.00 -> 500.00" in exported


def test_actions_read_as_plain_words_beside_their_codes(auclient, requester):
    """The log says "Key requested", not "Mint Requested" or only `mint.requested`; exports keep the codes."""
    from portal.audit import chain
    from portal.audit.models import AuditEvent

    chain.record(AuditEvent.Action.ISSUANCE_ABSENT, "success", actor=requester, key_name="gone")
    page = auclient.get("/audit/").content.decode()
    assert "Key request proved never created" in page and '<code class="muted">issuance.absent</code>' in page
    assert "Issuance Absent" not in page and "Mint Requested" not in page  # nor in the action filter
    assert '<option value="mint.requested">Key requested</option>' in page
    export = b"".join(auclient.get("/audit/export.jsonl").streaming_content).decode()
    assert '"issuance.absent"' in export and "proved never created" not in export
