from django.conf import settings


def portal(request) -> dict:
    return {"sandbox": settings.PORTAL_SANDBOX}
