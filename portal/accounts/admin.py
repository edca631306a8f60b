"""Who may do what, audited: Django's user and group admins, where every change of a user's
groups, direct permissions and active/staff/superuser flags, a group's permissions, a password set
and a user's deletion is an audit event; read-only views of what single sign-on keeps; and
django-axes' sign-in lockouts without the action that cannot work here."""

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables

from keys.models import SpendingPolicy
from portal.audit.admin import AuditsDeletions, ReadOnlyAdmin, record_change
from portal.audit.models import AuditEvent

from .access import audited_elsewhere
from .models import OIDCIdentity, SSOGroupGrant

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

    def changeform_view(self, request, *args, **kwargs):
        with audited_elsewhere():  # one event per save, from save_related, not one per signal
            return super().changeform_view(request, *args, **kwargs)

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
            record_change(request, AuditEvent.Action.USER_ACCESS_CHANGED, f"{subject} created: {_described(after)}")
        elif changes := _changes(before, after):
            record_change(request, AuditEvent.Action.USER_ACCESS_CHANGED, f"{subject}: " + "; ".join(changes))

    @method_decorator(sensitive_variables())  # the stored hash, in `before`
    def user_change_password(self, request, id, form_url=""):
        if request.method != "POST" or (user := self.get_object(request, unquote(id))) is None:
            return super().user_change_password(request, id, form_url)
        with transaction.atomic(), audited_elsewhere():
            stored = User.objects.select_for_update().filter(pk=user.pk).values_list("password", flat=True)
            before = stored.first()
            response = super().user_change_password(request, id, form_url)
            if stored.first() != before:  # set, or disabled; never the value or its hash
                detail = f"user {user.username!r}: password changed by admin"
                record_change(request, AuditEvent.Action.USER_PASSWORD_CHANGED, detail)
        return response

    def _record_deletions(self, request, users) -> None:
        pks = list(users.values_list("pk", flat=True))
        for user in User.objects.select_for_update().filter(pk__in=pks).order_by("pk"):
            detail = f"user {user.username!r} deleted; it had {_described(_access(user))}"
            record_change(request, AuditEvent.Action.USER_DELETED, detail)


admin.site.unregister(Group)


@admin.register(Group)
class AuditedGroupAdmin(AuditsDeletions, GroupAdmin):
    """A change of a group's permissions (on add too) is one `group.permissions_changed` event.
    Deleting a group deletes its spending policy with it (CASCADE): audit that as a policy
    deletion, since the policy admin never sees it."""

    def changeform_view(self, request, *args, **kwargs):
        with audited_elsewhere():
            return super().changeform_view(request, *args, **kwargs)

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
            record_change(request, AuditEvent.Action.GROUP_PERMISSIONS_CHANGED, detail)

    def _record_deletions(self, request, groups) -> None:
        policy_admin = admin.site.get_model_admin(SpendingPolicy)
        pks = list(groups.values_list("pk", flat=True))
        policies = SpendingPolicy.objects.select_for_update(of=("self",)).filter(group__in=pks)
        for policy in policies.select_related("group").order_by("pk"):
            policy_admin._record_deletion(request, policy, how="deleted with its group")


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


class LockoutAdmin(AccessAttemptAdmin):
    """django-axes' own page of sign-in failures and lockouts (docs/operations.md, "Sign-in
    lockouts"), without its "Clean up expired attempts" action: in django-axes 8.3.1 that action
    reads an attribute axes sets only on sign-in requests, so it always failed with a server error.
    Nothing is lost: axes removes expired rows at every sign-in attempt. Deleting rows (one, or
    "Delete selected") still lifts lockouts, audited (portal/accounts/access.py)."""

    actions = []


if admin.site.is_registered(AccessAttempt):  # as axes registers it unless AXES_ENABLE_ADMIN is off
    admin.site.unregister(AccessAttempt)
    admin.site.register(AccessAttempt, LockoutAdmin)
