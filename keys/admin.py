"""Django admin for Requesty keys: issuances, keys and approvals are read-only (the portal's flows
change them); spending policies and onboarding templates are edited here, every change audited."""

from django.contrib import admin

from portal.audit.admin import AuditedAdmin, ReadOnlyAdmin
from portal.audit.models import AuditEvent

from .models import ApprovalRequest, Issuance, IssuedKey, OnboardingTemplate, SpendingPolicy


@admin.register(Issuance)
class IssuanceAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "name", "actor", "state", "api_key_id", "upstream_status"]
    list_filter = ["state"]
    search_fields = ["name", "api_key_id", "nonce"]


@admin.register(IssuedKey)
class IssuedKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at", "name", "owner", "api_key_id", "monthly_limit", "manage", "completions", "status", "expires_at"
    ]  # fmt: skip
    list_filter = ["status", "manage"]
    search_fields = ["name", "api_key_id"]


@admin.register(SpendingPolicy)
class SpendingPolicyAdmin(AuditedAdmin):
    changed_action = AuditEvent.Action.POLICY_CHANGED
    deleted_action = AuditEvent.Action.POLICY_DELETED
    list_display = ["group", *SpendingPolicy.CAPS]

    def audit_subject(self, obj) -> str:
        return f"policy of group {obj.group.name!r}"


@admin.register(OnboardingTemplate)
class OnboardingTemplateAdmin(AuditedAdmin):
    changed_action = AuditEvent.Action.TEMPLATE_CHANGED
    deleted_action = AuditEvent.Action.TEMPLATE_DELETED
    list_display = ["slug", "name_pattern", "monthly_limit", "manage", "completions", "expiry_days", "return_url"]
    prepopulated_fields = {"slug": ["description"]}

    def audit_subject(self, obj) -> str:
        return f"template {obj.slug!r}"


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    """Decided in the portal at /approvals/, where each decision is audited and e-mailed."""

    list_display = ["created_at", "kind", "name", "requester", "monthly_limit", "status", "decided_by"]
    list_filter = ["status", "kind"]
