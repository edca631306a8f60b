"""Django admin: read-only views of the portal's records. Changes happen through the portal's
own flows, which call Requesty and write audit events; the admin must not bypass them.

The two exceptions, spending policies and onboarding templates, are edited here; every save and
delete of one is also an audit event in the portal's hash chain (Django's own `django_admin_log` is
editable and unchained), appended in the same transaction as the change."""

from decimal import Decimal

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.models import Group
from django.db import models, transaction

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


class AuditedAdmin(admin.ModelAdmin):
    """Appends `changed_action` on add and change (`field: old -> new` for each changed field; a
    save that changes nothing appends nothing) and `deleted_action`, with the last values, on
    delete, single or bulk. The admin's views are atomic and `audit.record` joins their
    transaction: the change and its event commit together or not at all."""

    changed_action: str
    deleted_action: str

    def audit_subject(self, obj) -> str:
        raise NotImplementedError

    def _record(self, request, action: str, detail: str) -> None:
        audit.record(
            action,
            AuditEvent.Outcome.SUCCESS,
            actor=request.user,
            source_ip=audit.client_ip(request),
            detail=_fit(detail),
        )

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
                self._record(request, self.changed_action, f"{self.audit_subject(obj)} created: {fields}")
                return
            old = _snapshot(before)
            changes = [f"{name}: {old[name]} -> {value}" for name, value in after.items() if old[name] != value]
            if changes:
                self._record(request, self.changed_action, f"{self.audit_subject(obj)}: " + "; ".join(changes))

    def delete_model(self, request, obj):
        with transaction.atomic(savepoint=False):
            self._record_deletion(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        # The "delete selected" action runs outside the admin's atomic views: make it one
        # transaction, so the rows and their events go together.
        with transaction.atomic():
            pks = list(queryset.values_list("pk", flat=True))
            locked = self.model._default_manager.select_for_update(of=("self",)).filter(pk__in=pks)
            for obj in locked.order_by("pk"):
                self._record_deletion(request, obj)
            super().delete_queryset(request, queryset)

    def _record_deletion(self, request, obj, how: str = "deleted") -> None:
        fields = "; ".join(f"{name}: {value}" for name, value in _snapshot(obj).items())
        self._record(request, self.deleted_action, f"{self.audit_subject(obj)} {how}; it was {fields}")


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


admin.site.unregister(Group)


@admin.register(Group)
class AuditedGroupAdmin(GroupAdmin):
    """Deleting a group deletes its spending policy with it (CASCADE): audit that as a policy
    deletion, since the policy admin never sees it."""

    def delete_model(self, request, obj):
        with transaction.atomic(savepoint=False):
            self._record_policy_deletions(request, Group.objects.filter(pk=obj.pk))
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            self._record_policy_deletions(request, queryset)
            super().delete_queryset(request, queryset)

    def _record_policy_deletions(self, request, groups) -> None:
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
