from django.conf import settings
from django.utils.functional import SimpleLazyObject

from portal.accounts.permissions import can_view_audit, is_portal_admin


def portal(request) -> dict:
    user = getattr(request, "user", None)
    signed_in = bool(user and user.is_authenticated)
    is_admin = signed_in and is_portal_admin(user)
    context = {
        "sandbox": settings.PORTAL_SANDBOX,
        "can_view_audit": signed_in and can_view_audit(user),
        "is_portal_admin": is_admin,
    }
    if is_admin:
        from .models import ApprovalRequest

        # Counted when a template shows it (the navigation), once: not for partials or Django's admin.
        pending = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING)
        context["pending_approvals"] = SimpleLazyObject(pending.count)
    return context
