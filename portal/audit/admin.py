"""Django admin pieces that keep the audit's rules.

Records are read-only in the admin (`ReadOnlyAdmin`): changes happen through the portal's own
flows, which call Requesty and write audit events, and the admin must not bypass them. Where the
admin does edit something (spending policies, onboarding templates, users and groups), every
change is also an audit event in the hash chain (Django's own `django_admin_log` is editable and
unchained), appended in the same transaction as the change (`AuditedAdmin`, `AuditsDeletions`).
"""

from decimal import Decimal

from django.contrib import admin
from django.db import models, transaction

from . import chain
from .models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
    return {f.name: _shown(obj, f) for f in obj._meta.get_fields() if f.concrete and not f.primary_key}


def _fit(detail: str) -> str:
    """The detail column holds 500 characters; say so when a long one is cut."""
    limit = AuditEvent._meta.get_field("detail").max_length
    return detail if len(detail) <= limit else detail[: limit - 1] + "…"


def record_change(request, action: str, detail: str) -> None:
    """One admin change, audited in the change's transaction."""
    chain.record_request(request, action, detail=_fit(detail))


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
    delete, single or bulk. The admin's views are atomic and `chain.record` joins their
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
                record_change(request, self.changed_action, f"{self.audit_subject(obj)} created: {fields}")
                return
            old = _snapshot(before)
            changes = [f"{name}: {old[name]} -> {value}" for name, value in after.items() if old[name] != value]
            if changes:
                record_change(request, self.changed_action, f"{self.audit_subject(obj)}: " + "; ".join(changes))

    def _record_deletions(self, request, queryset) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        for obj in self.model._default_manager.select_for_update(of=("self",)).filter(pk__in=pks).order_by("pk"):
            self._record_deletion(request, obj)

    def _record_deletion(self, request, obj, how: str = "deleted") -> None:
        fields = "; ".join(f"{name}: {value}" for name, value in _snapshot(obj).items())
        record_change(request, self.deleted_action, f"{self.audit_subject(obj)} {how}; it was {fields}")
