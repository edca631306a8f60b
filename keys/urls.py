from django.urls import include, path

from . import approval_views, expiry_views, idle_views, limit_views, spend_views, views

key_patterns = [
    path("", views.key_list, name="list"),
    # /keys/new/ is the stable URL onboarding material links to.
    path("new/", views.new_key, name="new"),
    path("<int:pk>/", views.key_detail, name="detail"),
    path("<int:pk>/spend/", views.key_spend, name="spend"),
    path("<int:pk>/usage/", views.key_usage, name="usage"),
    path("<int:pk>/limit/", limit_views.key_limit, name="limit"),
    path("<int:pk>/limit/approval/", limit_views.limit_approval_request, name="limit-approval"),
    path("<int:pk>/revoke/", views.key_revoke, name="revoke"),
    path("<int:pk>/keep/", idle_views.key_keep, name="keep"),
    path("<int:pk>/extend/", expiry_views.key_extend, name="extend"),
    path("<int:pk>/extend/request/", expiry_views.key_extend_request, name="extend-request"),
    path("<int:pk>/rotate/", expiry_views.key_rotate, name="rotate"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("keys/", include((key_patterns, "keys"))),
    path("approvals/", approval_views.approvals, name="approvals"),
    path("approvals/request/", approval_views.approval_request, name="approval-request"),
    path("approvals/<int:pk>/decide/", approval_views.approval_decide, name="approval-decide"),
    path("onboarding/", approval_views.onboarding_links, name="onboarding"),
    path("spend/", spend_views.spend_page, name="spend"),
    path("spend/export.csv", spend_views.spend_export, name="spend-export"),
]
