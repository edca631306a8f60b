"""Django admin: read-only views of the portal's records. Changes happen through the portal's
own flows, which call Requesty and write audit events; the admin must not bypass them.

The exceptions, spending policies and onboarding templates, are edited here; every save and
delete of one is also an audit event in the portal's hash chain (Django's own `django_admin_log` is
editable and unchained), appended in the same transaction as the change. So is every change here of
who may do what (Django's user and group admins): a user's groups, direct permissions and
active/staff/superuser flags, a group's permissions, a password set, and a user's deletion."""

from decimal import Decimal

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db import models, transaction
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables

from . import audit
from .models import (
    ApprovalRequest,
    AuditEvent,
    Issuance,
    IssuedKey,
    OIDCIdentity,
    OnboardingTemplate,
    SpendingPolicy,
    SSOGroupGrant,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Issuance)
class IssuanceAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "name", "actor", "state", "api_key_id", "upstream_status"]
    list_filter = ["state"]
    search_fields = ["name", "api_key_id", "nonce"]


@admin.register(IssuedKey)
class IssuedKeyAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "name", "owner", "api_key_id", "monthly_limit", "manage", "completions", "status"]
    list_filter = ["status", "manage"]
    search_fields = ["name", "api_key_id"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_username", "action", "outcome", "key_name", "api_key_id", "source_ip"]
    list_filter = ["action", "outcome"]
    search_fields = ["actor_username", "key_name", "api_key_id"]


def _shown(obj: models.Model, field: models.Field) -> str:
    """A field's value for an audit detail: numbers as numbers, free text quoted and escaped
    (repr: control and bidi characters stay visible), a related object by its name."""
    if field.is_relation:
        related = getattr(obj, field.name)
        return "none" if related is None else repr(str(related))
    value = getattr(obj, field.attname)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, str) and not field.choices:
        return repr(value)
    return str(value)


def _snapshot(obj: models.Model) -> dict[str, str]:
    return {f.name: _shown(obj, f) for f in obj._meta.concrete_fields if not f.primary_key}


def _fit(detail: str) -> str:
    """The detail column holds 500 characters; say so when a long one is cut."""
    limit = AuditEvent._meta.get_field("detail").max_length
    return detail if len(detail) <= limit else detail[: limit - 1] + "…"


def _record(request, action: str, detail: str) -> None:
    audit.record(
        action,
        AuditEvent.Outcome.SUCCESS,
        actor=request.user,
        source_ip=audit.client_ip(request),
        detail=_fit(detail),
    )


class AuditsDeletions:
    """Single and bulk deletes append `_record_deletions(request, queryset)`'s events in the same
    transaction as the delete. The "delete selected" action runs outside the admin's atomic
    views, hence the transaction around it."""

    def delete_model(self, request, obj):
        with transaction.atomic(savepoint=False):
            self._record_deletions(request, type(obj)._default_manager.filter(pk=obj.pk))
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            self._record_deletions(request, queryset)
            super().delete_queryset(request, queryset)

    def _record_deletions(self, request, queryset) -> None:
        raise NotImplementedError


class AuditedAdmin(AuditsDeletions, admin.ModelAdmin):
    """Appends `changed_action` on add and change (`field: old -> new` for each changed field; a
    save that changes nothing appends nothing) and `deleted_action`, with the last values, on
    delete, single or bulk. The admin's views are atomic and `audit.record` joins their
    transaction: the change and its event commit together or not at all."""

    changed_action: str
    deleted_action: str

    def audit_subject(self, obj) -> str:
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        with transaction.atomic(savepoint=False):
            # The stored values, locked until commit (PostgreSQL): "from what" is what was really
            # replaced, even if another admin saved since this form was loaded.
            manager = type(obj)._default_manager
            before = manager.select_for_update().filter(pk=obj.pk).first() if change else None
            super().save_model(request, obj, form, change)
            after = _snapshot(obj)
            if before is None:
                fields = "; ".join(f"{name}: {value}" for name, value in after.items())
                _record(request, self.changed_action, f"{self.audit_subject(obj)} created: {fields}")
                return
            old = _snapshot(before)
            changes = [f"{name}: {old[name]} -> {value}" for name, value in after.items() if old[name] != value]
            if changes:
                _record(request, self.changed_action, f"{self.audit_subject(obj)}: " + "; ".join(changes))

    def _record_deletions(self, request, queryset) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        for obj in self.model._default_manager.select_for_update(of=("self",)).filter(pk__in=pks).order_by("pk"):
            self._record_deletion(request, obj)

    def _record_deletion(self, request, obj, how: str = "deleted") -> None:
        fields = "; ".join(f"{name}: {value}" for name, value in _snapshot(obj).items())
        _record(request, self.deleted_action, f"{self.audit_subject(obj)} {how}; it was {fields}")


@admin.register(SpendingPolicy)
class SpendingPolicyAdmin(AuditedAdmin):
    changed_action = AuditEvent.Action.POLICY_CHANGED
    deleted_action = AuditEvent.Action.POLICY_DELETED
    list_display = [
        "group",
        "max_key_limit",
        "max_total_limit",
        "max_active_keys",
        "max_completions",
        "manage_requestable",
    ]

    def audit_subject(self, obj) -> str:
        return f"policy of group {obj.group.name!r}"


@admin.register(OnboardingTemplate)
class OnboardingTemplateAdmin(AuditedAdmin):
    changed_action = AuditEvent.Action.TEMPLATE_CHANGED
    deleted_action = AuditEvent.Action.TEMPLATE_DELETED
    list_display = ["slug", "name_pattern", "monthly_limit", "manage", "completions", "return_url"]
    prepopulated_fields = {"slug": ["description"]}

    def audit_subject(self, obj) -> str:
        return f"template {obj.slug!r}"


# --- Who may do what: users' groups, permissions and flags; groups' permissions -----------------
_FLAGS = ("is_active", "is_staff", "is_superuser")


def _label(name: str) -> str:
    """A group's name as sign-in events show it; control and bidi characters made visible."""
    return name if name.isprintable() else repr(name)


def _permissions(related) -> set[str]:
    return {f"{app}.{codename}" for app, codename in related.values_list("content_type__app_label", "codename")}


def _access(user: User) -> dict:
    """A user's access as stored: groups (spending policies, "Portal admins"), direct
    permissions, and the flags. Never the password."""
    return {
        "groups": {_label(name) for name in user.groups.values_list("name", flat=True)},
        "user_permissions": _permissions(user.user_permissions),
        **{flag: "yes" if getattr(user, flag) else "no" for flag in _FLAGS},
    }


def _described(state: dict) -> str:
    return "; ".join(
        f"{name}: {' '.join(sorted(value)) or 'none'}" if isinstance(value, set) else f"{name}: {value}"
        for name, value in state.items()
    )


def _changes(before: dict, after: dict) -> list[str]:
    """`name: +added -removed` for sets, `name: old -> new` for flags; unchanged ones left out."""
    changes = []
    for name, new in after.items():
        old = before[name]
        if old == new:
            continue
        if isinstance(new, set):
            added, removed = [f"+{v}" for v in sorted(new - old)], [f"-{v}" for v in sorted(old - new)]
            changes.append(f"{name}: {' '.join(added + removed)}")
        else:
            changes.append(f"{name}: {old} -> {new}")
    return changes


admin.site.unregister(User)


@admin.register(User)
class AuditedUserAdmin(AuditsDeletions, UserAdmin):
    """Add and change append one `user.access_changed` event when the access changed; a deletion
    (single or bulk) one `user.deleted`; a password set or disabled here one
    `user.password_changed`. Deactivation also revokes the user's keys (keys/signals.py)."""

    def save_model(self, request, obj, form, change):
        # Groups and permissions are saved after this, in save_related: compare there with the
        # stored state, locked until commit (PostgreSQL) as in AuditedAdmin.
        form.access_before = _access(User.objects.select_for_update().get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        user, before = form.instance, form.access_before
        after, subject = _access(user), f"user {user.username!r}"
        if before is None:
            _record(request, AuditEvent.Action.USER_ACCESS_CHANGED, f"{subject} created: {_described(after)}")
        elif changes := _changes(before, after):
            _record(request, AuditEvent.Action.USER_ACCESS_CHANGED, f"{subject}: " + "; ".join(changes))

    @method_decorator(sensitive_variables())  # the stored hash, in `before`
    def user_change_password(self, request, id, form_url=""):
        if request.method != "POST" or (user := self.get_object(request, unquote(id))) is None:
            return super().user_change_password(request, id, form_url)
        with transaction.atomic():
            stored = User.objects.select_for_update().filter(pk=user.pk).values_list("password", flat=True)
            before = stored.first()
            response = super().user_change_password(request, id, form_url)
            if stored.first() != before:  # set, or disabled; never the value or its hash
                detail = f"user {user.username!r}: password changed by admin"
                _record(request, AuditEvent.Action.USER_PASSWORD_CHANGED, detail)
        return response

    def _record_deletions(self, request, users) -> None:
        pks = list(users.values_list("pk", flat=True))
        for user in User.objects.select_for_update().filter(pk__in=pks).order_by("pk"):
            detail = f"user {user.username!r} deleted; it had {_described(_access(user))}"
            _record(request, AuditEvent.Action.USER_DELETED, detail)


admin.site.unregister(Group)


@admin.register(Group)
class AuditedGroupAdmin(AuditsDeletions, GroupAdmin):
    """A change of a group's permissions (on add too) is one `group.permissions_changed` event.
    Deleting a group deletes its spending policy with it (CASCADE): audit that as a policy
    deletion, since the policy admin never sees it."""

    def save_model(self, request, obj, form, change):
        # As for users: permissions are saved in save_related.
        stored = Group.objects.select_for_update().get(pk=obj.pk) if change else None
        form.permissions_before = _permissions(stored.permissions) if stored else set()
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        group, created = form.instance, "" if change else " created"
        before, after = {"permissions": form.permissions_before}, {"permissions": _permissions(group.permissions)}
        if changes := _changes(before, after):
            detail = f"group {group.name!r}{created}: {changes[0]}"
            _record(request, AuditEvent.Action.GROUP_PERMISSIONS_CHANGED, detail)

    def _record_deletions(self, request, groups) -> None:
        policy_admin = admin.site.get_model_admin(SpendingPolicy)
        pks = list(groups.values_list("pk", flat=True))
        policies = SpendingPolicy.objects.select_for_update(of=("self",)).filter(group__in=pks)
        for policy in policies.select_related("group").order_by("pk"):
            policy_admin._record_deletion(request, policy, how="deleted with its group")


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    """Decided in the portal at /approvals/, where each decision is audited and e-mailed."""

    list_display = ["created_at", "name", "requester", "monthly_limit", "manage", "completions", "status", "decided_by"]
    list_filter = ["status"]


@admin.register(OIDCIdentity)
class OIDCIdentityAdmin(ReadOnlyAdmin):
    """Which provider account signs in as which portal user; single sign-on keeps these."""

    list_display = ["user", "issuer", "subject", "created_at", "last_sign_in_at"]
    search_fields = ["user__username", "user__email", "subject"]


@admin.register(SSOGroupGrant)
class SSOGroupGrantAdmin(ReadOnlyAdmin):
    """Memberships single sign-on granted (and will take away when the provider does)."""

    list_display = ["user", "group", "granted_at"]
    list_filter = ["group"]
    search_fields = ["user__username"]
