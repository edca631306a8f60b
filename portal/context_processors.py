"""What every page's navigation needs: the sandbox banner, the audit and approvals links, the
number of pending approvals. Each is read when a template shows it, once per request: partials
that render no navigation cost no query."""

from django.conf import settings
from django.utils.functional import SimpleLazyObject

from portal.accounts.permissions import can_view_audit, can_view_spend, is_portal_admin


def navigation(request) -> dict:
    user = getattr(request, "user", None)

    def signed_in() -> bool:
        return bool(user and user.is_authenticated)

    def pending_approvals() -> int:
        from keys.models import ApprovalRequest

        if not (signed_in() and is_portal_admin(user)):
            return 0
        return ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count()

    return {
        "sandbox": settings.PORTAL_SANDBOX,
        "can_view_audit": SimpleLazyObject(lambda: signed_in() and can_view_audit(user)),
        "is_portal_admin": SimpleLazyObject(lambda: signed_in() and is_portal_admin(user)),
        "can_view_spend": SimpleLazyObject(lambda: signed_in() and can_view_spend(user)),
        "pending_approvals": SimpleLazyObject(pending_approvals),
    }
