from django.conf import settings

from .audit_views import can_view_audit


def portal(request) -> dict:
    user = getattr(request, "user", None)
    return {
        "sandbox": settings.PORTAL_SANDBOX,
        "can_view_audit": bool(user and user.is_authenticated and can_view_audit(user)),
    }
