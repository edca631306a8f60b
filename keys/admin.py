"""Django admin: read-only views of the portal's records. Changes happen through the portal's
own flows, which call Requesty and write audit events; the admin must not bypass them."""

from django.contrib import admin

from .models import AuditEvent, Issuance, IssuedKey


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
