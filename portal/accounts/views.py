"""Sign-out. Sign-in lives with the backends it drives (sso.py: the password form and single sign-on)."""

from django.contrib.auth import views as auth_views
from django.views.decorators.http import require_POST


@require_POST
def logout(request):
    """Sign out, and ask the browser to drop anything it kept of this site."""
    response = auth_views.LogoutView.as_view()(request)
    response["Clear-Site-Data"] = '"cache", "storage"'
    return response
