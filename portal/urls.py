"""URL wiring only: each app owns its own routes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from keys import views as key_views

urlpatterns = [
    path("", key_views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", key_views.logout, name="logout"),
    path("keys/", include("keys.urls")),
    path("admin/", admin.site.urls),
]
