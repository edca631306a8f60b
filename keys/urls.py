from django.urls import path

from . import views

app_name = "keys"

urlpatterns = [
    # /keys/new/ is the stable URL onboarding material links to.
    path("new/", views.new_key, name="new"),
]
