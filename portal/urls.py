"""URL wiring only: each app owns its own routes."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("keys.urls")),
    path("", include("portal.accounts.urls")),
    path("audit/", include("portal.audit.urls")),
    path("admin/", admin.site.urls),
]

handler500 = "portal.errors.server_error"
