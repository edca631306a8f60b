from django.urls import path

from . import sso, views

urlpatterns = [
    path("accounts/login/", sso.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.logout, name="logout"),
    # Single sign-on (sso.py): answer 404 unless OIDC is configured. Register
    # https://<host>/oidc/callback/ as the redirect URI at the provider.
    path("oidc/authenticate/", sso.sign_in, name="oidc_authentication_init"),
    path("oidc/callback/", sso.callback, name="oidc_authentication_callback"),
]
