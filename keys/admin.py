"""Django admin: read-only views of the portal's records. Changes happen through the portal's
own flows, which call Requesty and write audit events; the admin must not bypass them."""

from django.contrib import admin

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


@admin.register(SpendingPolicy)
class SpendingPolicyAdmin(admin.ModelAdmin):
    list_display = [
        "group",
        "max_key_limit",
        "max_total_limit",
        "max_active_keys",
        "max_completions",
        "manage_requestable",
    ]


@admin.register(OnboardingTemplate)
class OnboardingTemplateAdmin(admin.ModelAdmin):
    list_display = ["slug", "name_pattern", "monthly_limit", "manage", "completions", "return_url"]
    prepopulated_fields = {"slug": ["description"]}


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
