"""Access changes audited whatever path made them (invariant I7): the shell, `createsuperuser`,
`changepassword`, `/admin/password_change/`, axes' commands, or code. Signals on the user model,
its group and permission relations, a group's permissions, and sign-in lockouts report them.

Django's user and group admins (admin.py) audit their own changes as one event per save, so
their saves run `audited_elsewhere()`, as does single sign-on, whose sign-in event lists the
groups it granted. Events carry the signed-in person and address of the request that made the
change, if any (`CurrentRequestMiddleware`), else the portal itself ("system")."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone

from portal.audit import chain
from portal.audit.models import AuditEvent

_FLAGS = ("is_active", "is_staff", "is_superuser")
_WATCHED = {*_FLAGS, "password"}
_elsewhere: ContextVar[bool] = ContextVar("portal_access_audited_elsewhere", default=False)
_request: ContextVar = ContextVar("portal_current_request", default=None)


@contextmanager
def audited_elsewhere():
    """Changes made inside are audited by the caller: the signals stay quiet."""
    token = _elsewhere.set(True)
    try:
        yield
    finally:
        _elsewhere.reset(token)


class CurrentRequestMiddleware:
    """Remembers the request being served, so a change made during it names who made it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def _record(action: str, detail: str) -> None:
    request = _request.get()
    if request is not None and getattr(request, "user", None) is not None and request.user.is_authenticated:
        chain.record_request(request, action, detail=detail[:1000])
    else:
        chain.record(action, AuditEvent.Outcome.SUCCESS, actor=None, source_ip=None, detail=detail[:1000])


def _yes(value) -> str:
    return "yes" if value else "no"


# --- Flags and passwords --------------------------------------------------------------------------
@receiver(pre_save, sender=User, dispatch_uid="portal_access_before")
def _before(sender, instance, raw=False, update_fields=None, **kwargs):
    instance._portal_access_before = None
    if raw or _elsewhere.get() or instance.pk is None:
        return
    if update_fields is not None and not _WATCHED & set(update_fields):
        return  # last_login, a profile refresh: nothing about access
    instance._portal_access_before = User.objects.filter(pk=instance.pk).values(*_WATCHED).first()


@receiver(post_save, sender=User, dispatch_uid="portal_access_after")
def _after(sender, instance, created, raw=False, update_fields=None, **kwargs):
    if raw or _elsewhere.get():
        return
    subject = f"user {instance.get_username()!r}"
    if created:
        if instance.is_staff or instance.is_superuser:  # e.g. createsuperuser; plain accounts grant nothing
            flags = "; ".join(f"{flag}: {_yes(getattr(instance, flag))}" for flag in _FLAGS)
            password = "with a password" if instance.has_usable_password() else "without a usable password"
            _record(AuditEvent.Action.USER_ACCESS_CHANGED, f"{subject} created outside the admin, {password}: {flags}")
        return
    before = getattr(instance, "_portal_access_before", None)
    if before is None:
        return
    changes = [
        f"{flag}: {_yes(before[flag])} -> {_yes(getattr(instance, flag))}"
        for flag in _FLAGS
        if before[flag] != getattr(instance, flag)
    ]
    if changes:
        _record(AuditEvent.Action.USER_ACCESS_CHANGED, f"{subject}: " + "; ".join(changes))
    # A hash rehashed at sign-in (Django's check_password saves only the password, after clearing
    # the raw one) is not a change of password; set_password(), or a hash assigned by hand, is.
    rehash = update_fields is not None and set(update_fields) == {"password"} and instance._password is None
    if before["password"] != instance.password and not rehash:
        _record(AuditEvent.Action.USER_PASSWORD_CHANGED, f"{subject}: password changed outside the admin's user pages")


# --- Groups and permissions -----------------------------------------------------------------------
def _names(model, pks) -> list[str]:
    if model is Group:
        return sorted(Group.objects.filter(pk__in=pks).values_list("name", flat=True))
    if model is User:
        return sorted(User.objects.filter(pk__in=pks).values_list("username", flat=True))
    rows = model.objects.filter(pk__in=pks).values_list("content_type__app_label", "codename")
    return sorted(f"{app}.{codename}" for app, codename in rows)


def _relation_changed(instance, action, reverse, model, pk_set, what: str, owner: str):
    """One event per add, remove or clear, from whichever side it was made: forward (`user.groups`)
    one about the user; reverse (`group.user_set`) one about each user it touched."""
    if _elsewhere.get():
        return
    if action == "pre_clear":  # Django sends no pks with a clear: read them while they exist
        accessor = what if not reverse else ("user_set" if owner == "user" else "group_set")
        instance._portal_cleared = set(getattr(instance, accessor).values_list("pk", flat=True))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    pks = getattr(instance, "_portal_cleared", set()) if action == "post_clear" else pk_set
    if not pks:
        return
    sign = "+" if action == "post_add" else "-"
    if not reverse:
        _record_one(owner, instance, what, [f"{sign}{name}" for name in _names(model, pks)])
        return
    for other in _owners(owner, pks):
        _record_one(owner, other, what, [f"{sign}{_name_of(instance)}"])


def _owners(owner: str, pks):
    return (User if owner == "user" else Group).objects.filter(pk__in=pks).order_by("pk")


def _name_of(obj) -> str:
    if isinstance(obj, Group):
        return obj.name
    if isinstance(obj, User):
        return obj.get_username()
    return f"{obj.content_type.app_label}.{obj.codename}"


def _record_one(owner: str, obj, what: str, changes: list[str]) -> None:
    if not changes:
        return
    if owner == "user":
        _record(AuditEvent.Action.USER_ACCESS_CHANGED, f"user {obj.get_username()!r}: {what}: {' '.join(changes)}")
    else:
        _record(AuditEvent.Action.GROUP_PERMISSIONS_CHANGED, f"group {obj.name!r}: {what}: {' '.join(changes)}")


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="portal_access_groups")
def _groups(sender, instance, action, reverse, model, pk_set, **kwargs):
    _relation_changed(instance, action, reverse, model, pk_set, "groups", "user")


@receiver(m2m_changed, sender=User.user_permissions.through, dispatch_uid="portal_access_user_permissions")
def _user_permissions(sender, instance, action, reverse, model, pk_set, **kwargs):
    _relation_changed(instance, action, reverse, model, pk_set, "user_permissions", "user")


@receiver(m2m_changed, sender=Group.permissions.through, dispatch_uid="portal_access_group_permissions")
def _group_permissions(sender, instance, action, reverse, model, pk_set, **kwargs):
    _relation_changed(instance, action, reverse, model, pk_set, "permissions", "group")


# --- Sign-in lockouts -----------------------------------------------------------------------------
@receiver(post_delete, sender=AccessAttempt, dispatch_uid="portal_lockout_lifted")
def _lockout_lifted(sender, instance, **kwargs):
    """Deleting an attempt row that is locking someone out lifts the lockout (operations.md, "Sign-in
    lockouts"): in the admin, with axes' reset commands, or in the shell. Axes' own deletions
    (after a successful sign-in, or of expired rows) never remove an active lockout."""
    cool_off_start = timezone.now() - timedelta(minutes=settings.PORTAL_SIGN_IN_LOCKOUT_MINUTES)
    if instance.failures_since_start < settings.AXES_FAILURE_LIMIT or instance.attempt_time <= cool_off_start:
        return
    detail = (
        f"sign-in lockout lifted for username {str(instance.username)[:150]!r} from {instance.ip_address or 'unknown'}"
        f" after {instance.failures_since_start} failures"
    )
    _record(AuditEvent.Action.USER_ACCESS_CHANGED, detail)
