from django.urls import path

from . import views

urlpatterns = [
    path("", views.audit_log, name="audit"),
    path("events/<int:seq>/", views.audit_event, name="audit-event"),
    path("keys/<str:api_key_id>/", views.audit_key, name="audit-key"),
    path("export.csv", views.audit_export, {"fmt": "csv"}, name="audit-export-csv"),
    path("export.jsonl", views.audit_export, {"fmt": "jsonl"}, name="audit-export-jsonl"),
]
