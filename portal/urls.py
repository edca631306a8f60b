"""URL wiring only: each app owns its own routes."""

from django.contrib import admin
from django.urls import include, path

from keys import approval_views, audit_views, sso
from keys import views as key_views

urlpatterns = [
    path("", key_views.home, name="home"),
    path("accounts/login/", sso.LoginView.as_view(), name="login"),
    path("accounts/logout/", key_views.logout, name="logout"),
    # Single sign-on (keys/sso.py): answer 404 unless OIDC is configured. Register
    # https://<host>/oidc/callback/ as the redirect URI at the provider.
    path("oidc/authenticate/", sso.sign_in, name="oidc_authentication_init"),
    path("oidc/callback/", sso.callback, name="oidc_authentication_callback"),
    path("keys/", include("keys.urls")),
    path("approvals/", approval_views.approvals, name="approvals"),
    path("approvals/request/", approval_views.approval_request, name="approval-request"),
    path("approvals/<int:pk>/decide/", approval_views.approval_decide, name="approval-decide"),
    path("onboarding/", approval_views.onboarding_links, name="onboarding"),
    path("audit/", audit_views.audit_log, name="audit"),
    path("audit/events/<int:seq>/", audit_views.audit_event, name="audit-event"),
    path("audit/keys/<str:api_key_id>/", audit_views.audit_key, name="audit-key"),
    path("audit/export.csv", audit_views.audit_export, {"fmt": "csv"}, name="audit-export-csv"),
    path("audit/export.jsonl", audit_views.audit_export, {"fmt": "jsonl"}, name="audit-export-jsonl"),
    path("admin/", admin.site.urls),
]

handler500 = "portal.errors.server_error"
