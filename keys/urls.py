from django.urls import path

from . import views

app_name = "keys"

urlpatterns = [
    path("", views.key_list, name="list"),
    # /keys/new/ is the stable URL onboarding material links to.
    path("new/", views.new_key, name="new"),
    path("<int:pk>/", views.key_detail, name="detail"),
    path("<int:pk>/spend/", views.key_spend, name="spend"),
    path("<int:pk>/usage/", views.key_usage, name="usage"),
    path("<int:pk>/limit/", views.key_limit, name="limit"),
    path("<int:pk>/revoke/", views.key_revoke, name="revoke"),
]
