from django.urls import path

from . import views

urlpatterns = [
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.logout, name="logout"),
    # Single sign-on (views.py): answer 404 unless OIDC is configured. Register
    # https://<host>/oidc/callback/ as the redirect URI at the provider.
    path("oidc/authenticate/", views.sign_in, name="oidc_authentication_init"),
    path("oidc/callback/", views.callback, name="oidc_authentication_callback"),
]
