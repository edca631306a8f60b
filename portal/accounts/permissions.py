"""Who may do what: the roles beyond "signed-in staff", and the decorators every view uses.

Checks live in views (and in querysets filtered by user), never only in templates: an htmx request
that renders a partial skips any `{% if %}` around it.
"""

from functools import wraps

from django.core.exceptions import PermissionDenied

PORTAL_ADMIN = "keys.portal_admin"  # manage rights, any limit, approvals, every key
AUDITOR = "audit.view_audit_log"  # review and export the audit log
SPEND_VIEWER = "keys.view_spend"  # the spend page and its export (finance)


def is_portal_admin(user) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm(PORTAL_ADMIN)))


def can_view_audit(user) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm(AUDITOR)))


def can_view_spend(user) -> bool:
    """Portal admins, and holders of "Can view spend" (for finance)."""
    return bool(user.is_active and (is_portal_admin(user) or user.has_perm(SPEND_VIEWER)))


def _requires(check):
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not check(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


portal_admin_required = _requires(is_portal_admin)
auditor_required = _requires(can_view_audit)
spend_viewer_required = _requires(can_view_spend)
