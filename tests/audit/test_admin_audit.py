"""Spending policies and onboarding templates edited in Django's admin: every add, change and
delete (single, bulk, or with the policy's group) is one event in the hash-chained audit log,
appended in the same transaction as the change. So is every change of who may do what: a user's
groups, direct permissions and flags, a group's permissions, a password set, a user's deletion."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.utils import timezone

from keys.models import OnboardingTemplate, SpendingPolicy
from portal.audit import admin as audit_admin
from portal.audit import chain
from portal.audit.models import AuditEvent

POLICIES = "/admin/keys/spendingpolicy/"
TEMPLATES = "/admin/keys/onboardingtemplate/"
USERS = "/admin/auth/user/"
GROUPS = "/admin/auth/group/"


@pytest.fixture
def suclient(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


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


def appended(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=since).order_by("seq"))


def head_seq() -> int:
    return (chain.head() or (0, ""))[0]


def assert_one_chained_event(since: int, action: str, actor) -> AuditEvent:
    events = appended(since)
    assert [e.action for e in events] == [action]
    event = events[0]
    assert (event.actor_id, event.actor_username, event.outcome) == (actor.pk, "sam", "success")
    assert event.source_ip == "127.0.0.1"
    previous = AuditEvent.objects.filter(seq=event.seq - 1).values_list("hash", flat=True).first()
    assert event.prev_hash == (previous or chain.GENESIS)
    assert chain.verify().ok
    return event


# --- Spending policies ----------------------------------------------------------------------------
def test_creating_a_policy_is_one_event_with_its_values(suclient, superuser):
    group = Group.objects.create(name="Engineering")
    since = head_seq()
    response = suclient.post(
        f"{POLICIES}add/",
        {
            "group": group.pk,
            "max_key_limit": "75",
            "max_total_limit": "300",
            "max_active_keys": "4",
            "max_completions": "read",
            "manage_requestable": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = assert_one_chained_event(since, "policy.changed", superuser)
    assert event.detail == (
        "policy of group 'Engineering' created: group: 'Engineering'; max_key_limit: 75.00; "
        "max_total_limit: 300.00; max_active_keys: 4; max_completions: read; manage_requestable: yes"
    )


def test_changing_a_policy_names_each_changed_field_from_old_to_new(suclient, superuser):
    policy = make_policy()
    since = head_seq()
    # A save that changes nothing (50 is the stored 50.00) appends nothing.
    assert suclient.post(f"{POLICIES}{policy.pk}/change/", policy_form(policy)).status_code == 302
    assert appended(since) == []

    changed = policy_form(policy, max_key_limit="500", max_active_keys="10", manage_requestable="on")
    assert suclient.post(f"{POLICIES}{policy.pk}/change/", changed).status_code == 302
    event = assert_one_chained_event(since, "policy.changed", superuser)
    assert event.detail == (
        "policy of group 'Engineering': max_key_limit: 50.00 -> 500.00; max_active_keys: 5 -> 10; "
        "manage_requestable: no -> yes"
    )
    policy.refresh_from_db()
    assert policy.max_key_limit == Decimal("500.00")


def test_moving_a_policy_to_another_group_names_both(suclient, superuser):
    policy = make_policy()
    other = Group.objects.create(name="Sales")
    since = head_seq()
    assert suclient.post(f"{POLICIES}{policy.pk}/change/", policy_form(policy, group=other.pk)).status_code == 302
    event = assert_one_chained_event(since, "policy.changed", superuser)
    assert event.detail == "policy of group 'Sales': group: 'Engineering' -> 'Sales'"


def test_deleting_a_policy_records_what_it_was(suclient, superuser):
    policy = make_policy()
    since = head_seq()
    assert suclient.post(f"{POLICIES}{policy.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not SpendingPolicy.objects.exists()
    event = assert_one_chained_event(since, "policy.deleted", superuser)
    assert event.detail.startswith("policy of group 'Engineering' deleted; it was group: 'Engineering'; ")
    assert "max_key_limit: 50.00; max_total_limit: 200.00; max_active_keys: 5" in event.detail


def test_bulk_delete_records_one_event_per_policy(suclient, superuser):
    first, second, kept = make_policy("Engineering"), make_policy("Sales"), make_policy("Support")
    since = head_seq()
    response = suclient.post(
        POLICIES, {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"}
    )
    assert response.status_code == 302
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
    since = head_seq()
    assert suclient.post(f"/admin/auth/group/{policy.group_id}/delete/", {"post": "yes"}).status_code == 302
    assert not SpendingPolicy.objects.exists()
    event = assert_one_chained_event(since, "policy.deleted", superuser)
    assert event.detail.startswith("policy of group 'Engineering' deleted with its group; it was ")
    # A group without a policy goes without an event.
    bare = Group.objects.create(name="No policy")
    since = head_seq()
    assert (
        suclient.post(
            "/admin/auth/group/", {"action": "delete_selected", "_selected_action": [bare.pk], "post": "yes"}
        ).status_code
        == 302
    )
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
            suclient.post(POLICIES, {"action": "delete_selected", "_selected_action": selected, "post": "yes"})
        else:
            suclient.post(f"{POLICIES}{first.pk}/change/", policy_form(first, max_key_limit="999"))
    assert len(calls) == (2 if bulk else 1)
    assert SpendingPolicy.objects.count() == 2
    first.refresh_from_db()
    assert first.max_key_limit == Decimal("50.00")
    assert appended(since) == []


# --- Onboarding templates -------------------------------------------------------------------------
def test_template_create_change_and_delete_are_each_one_event(suclient, superuser):
    since = head_seq()
    form = {
        "slug": "data-team",
        "name_pattern": "{username}-dev",
        "monthly_limit": "25",
        "manage": "none",
        "completions": "write",
        "return_url": "",
        "description": "",
    }
    assert suclient.post(f"{TEMPLATES}add/", form).status_code == 302
    event = assert_one_chained_event(since, "template.changed", superuser)
    assert event.detail.startswith("template 'data-team' created: slug: 'data-team'; name_pattern: '{username}-dev'; ")
    template = OnboardingTemplate.objects.get()

    since = head_seq()
    assert suclient.post(f"{TEMPLATES}{template.pk}/change/", template_form(template)).status_code == 302
    assert appended(since) == []  # nothing changed, nothing appended

    changes = {"monthly_limit": "40", "return_url": "https://wiki.example.com/next", "description": "evil\u202egnp\nx"}
    assert suclient.post(f"{TEMPLATES}{template.pk}/change/", template_form(template, **changes)).status_code == 302
    event = assert_one_chained_event(since, "template.changed", superuser)
    assert event.detail == (
        "template 'data-team': monthly_limit: 25.00 -> 40.00; "
        "return_url: '' -> 'https://wiki.example.com/next'; description: '' -> 'evil\\u202egnp\\nx'"
    )

    since = head_seq()
    assert suclient.post(f"{TEMPLATES}{template.pk}/delete/", {"post": "yes"}).status_code == 302
    event = assert_one_chained_event(since, "template.deleted", superuser)
    assert event.detail.startswith("template 'data-team' deleted; it was slug: 'data-team'; ")
    assert "return_url: 'https://wiki.example.com/next'" in event.detail


def test_bulk_delete_records_one_event_per_template(suclient, superuser):
    first, second = make_template("alpha"), make_template("beta")
    since = head_seq()
    response = suclient.post(
        TEMPLATES, {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"}
    )
    assert response.status_code == 302
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
    since = head_seq()
    changes = {
        "name_pattern": "n" * 64,
        "return_url": "https://wiki.example.com/" + "a" * 175,
        "description": "d" * 200,
    }
    assert suclient.post(f"{TEMPLATES}{template.pk}/change/", template_form(template, **changes)).status_code == 302
    event = assert_one_chained_event(since, "template.changed", superuser)
    assert len(event.detail) == 500 and event.detail.endswith("…")
    assert "return_url: '' -> 'https://wiki.example.com/aaa" in event.detail  # fields in model order


# --- In the audit log -----------------------------------------------------------------------------
def test_admin_changes_show_on_the_audit_page_and_its_filters(suclient):
    policy = make_policy()
    suclient.post(f"{POLICIES}{policy.pk}/change/", policy_form(policy, max_key_limit="500"))
    event = AuditEvent.objects.get(action="policy.changed")

    page = suclient.get("/audit/?action=policy.changed").content.decode()
    assert f'href="/audit/events/{event.seq}/"' in page
    assert "<code>policy.changed</code>" in page
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


# --- Users and groups: who may do what ------------------------------------------------------------
def permission(codename: str) -> Permission:
    return Permission.objects.get(codename=codename)


def user_form(user: User, **changes) -> dict:
    """The admin's change form for `user` as stored, with `changes` (None: an unticked box)."""
    joined = timezone.localtime(user.date_joined)
    form = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on" if user.is_active else None,
        "is_staff": "on" if user.is_staff else None,
        "is_superuser": "on" if user.is_superuser else None,
        "groups": [g.pk for g in user.groups.all()],
        "user_permissions": [p.pk for p in user.user_permissions.all()],
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        **changes,
    }
    return {k: v for k, v in form.items() if v is not None}


def change_user(client: Client, user: User, **changes) -> None:
    response = client.post(f"{USERS}{user.pk}/change/", user_form(user, **changes))
    assert response.status_code == 302, response.content.decode()[:2000]


def test_adding_and_removing_groups_is_one_event(suclient, superuser, requester):
    engineering, contractors = Group.objects.create(name="Engineering"), Group.objects.create(name="Contractors")
    requester.groups.add(contractors)
    since = head_seq()
    change_user(suclient, requester, groups=[engineering.pk])
    assert list(requester.groups.all()) == [engineering]
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': groups: +Engineering -Contractors"


def test_superuser_and_active_flags_from_old_to_new(suclient, superuser, requester):
    since = head_seq()
    change_user(suclient, requester, is_superuser="on", is_staff="on")
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': is_staff: no -> yes; is_superuser: no -> yes"

    requester.refresh_from_db()
    since = head_seq()
    change_user(suclient, requester, is_superuser=None, is_active=None)
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': is_active: yes -> no; is_superuser: yes -> no"


def test_a_permission_granted_directly_is_one_event(suclient, superuser, requester):
    since = head_seq()
    change_user(suclient, requester, user_permissions=[permission("portal_admin").pk])
    assert User.objects.get(pk=requester.pk).has_perm("keys.portal_admin")
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': user_permissions: +keys.portal_admin"


def test_a_save_that_changes_no_access_appends_nothing(suclient, superuser, requester):
    requester.groups.add(Group.objects.create(name="Engineering"))
    requester.user_permissions.add(permission("view_audit_log"))
    since = head_seq()
    change_user(suclient, requester)
    change_user(suclient, requester, first_name="Rita", email="rita@new.example.com")
    assert appended(since) == []
    # ... while a change of access in the same kind of save does append.
    change_user(suclient, requester, user_permissions=[])
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == "user 'rita': user_permissions: -audit.view_audit_log"


def test_adding_a_user_records_its_access(suclient, superuser):
    since = head_seq()
    form = {
        "username": "nina",
        "usable_password": "true",
        "password1": "Plaid-Otter-4471",
        "password2": "Plaid-Otter-4471",
    }
    response = suclient.post(f"{USERS}add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    event = assert_one_chained_event(since, "user.access_changed", superuser)
    assert event.detail == (
        "user 'nina' created: groups: none; user_permissions: none; is_active: yes; is_staff: no; is_superuser: no"
    )


def test_a_group_permission_change_is_one_event(suclient, superuser):
    group = Group.objects.create(name="Engineering")
    group.permissions.add(permission("view_audit_log"))
    since = head_seq()
    form = {"name": "Engineering", "permissions": [permission("view_audit_log").pk]}
    assert suclient.post(f"{GROUPS}{group.pk}/change/", form).status_code == 302
    assert appended(since) == []  # nothing changed, nothing appended

    form["permissions"] = [permission("portal_admin").pk]
    assert suclient.post(f"{GROUPS}{group.pk}/change/", form).status_code == 302
    assert set(group.permissions.values_list("codename", flat=True)) == {"portal_admin"}
    event = assert_one_chained_event(since, "group.permissions_changed", superuser)
    assert event.detail == "group 'Engineering': permissions: +keys.portal_admin -audit.view_audit_log"

    since = head_seq()
    form = {"name": "Auditors", "permissions": [permission("view_audit_log").pk]}
    assert suclient.post(f"{GROUPS}add/", form).status_code == 302
    event = assert_one_chained_event(since, "group.permissions_changed", superuser)
    assert event.detail == "group 'Auditors' created: permissions: +audit.view_audit_log"


def test_deleting_users_is_one_event_each(suclient, superuser, requester, requester2):
    requester.groups.add(Group.objects.create(name="Engineering"))
    since = head_seq()
    assert suclient.post(f"{USERS}{requester.pk}/delete/", {"post": "yes"}).status_code == 302
    event = assert_one_chained_event(since, "user.deleted", superuser)
    assert event.detail == (
        "user 'rita' deleted; it had groups: Engineering; user_permissions: none; "
        "is_active: yes; is_staff: no; is_superuser: no"
    )

    other = User.objects.create_user("ole")
    since = head_seq()
    selected = [requester2.pk, other.pk]
    response = suclient.post(USERS, {"action": "delete_selected", "_selected_action": selected, "post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(pk__in=selected).exists()
    events = appended(since)
    assert [(e.action, e.detail.split(" deleted;")[0]) for e in events] == [
        ("user.deleted", "user 'rob'"),
        ("user.deleted", "user 'ole'"),
    ]
    assert chain.verify().ok


def test_a_failed_audit_append_undoes_the_access_change(suclient, monkeypatch, requester):
    """The memberships are saved after the user row (save_related): they roll back too."""
    engineering = Group.objects.create(name="Engineering")
    since = head_seq()

    def fails(*args, **kwargs):
        raise RuntimeError("audit append failed")

    monkeypatch.setattr(audit_admin.chain, "record", fails)
    with pytest.raises(RuntimeError, match="audit append failed"):
        change_user(suclient, requester, groups=[engineering.pk], is_superuser="on")
    requester.refresh_from_db()
    assert not requester.is_superuser and not requester.groups.exists()
    assert appended(since) == []


def test_a_password_set_by_an_admin_is_audited_without_it_or_its_hash(suclient, superuser, requester):
    old_hash = requester.password
    since = head_seq()
    new_password = "Plaid-Otter-4471"
    form = {"usable_password": "true", "password1": new_password, "password2": new_password}
    assert suclient.post(f"{USERS}{requester.pk}/password/", form).status_code == 302
    requester.refresh_from_db()
    assert requester.check_password(new_password)
    event = assert_one_chained_event(since, "user.password_changed", superuser)
    assert event.detail == "user 'rita': password changed by admin"

    # Other saves of this user (access changes included) do not carry it either.
    change_user(suclient, requester, is_staff="on")
    assert suclient.post(f"{USERS}{requester.pk}/delete/", {"post": "yes"}).status_code == 302
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM keys_auditevent")
        table = repr(cursor.fetchall())
    assert "user.access_changed" in table and "user.deleted" in table
    for secret in (new_password, old_hash, requester.password, *requester.password.split("$")[1:]):
        assert secret not in table
