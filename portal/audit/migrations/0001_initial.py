"""The audit log, taken over from the keys app (keys 0015): the table keys_auditevent, its rows,
indexes, trigger and chain-head function stay; only the model's owner and content type change."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


MODELS = ("auditevent",)


def _move(apps, source: str, target: str) -> None:
    """Hand the content types (and so the permissions, and every group's and user's grants of
    them) from one app label to the other."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not ContentType.objects.filter(app_label=target, model=model).exists():
            ContentType.objects.filter(app_label=source, model=model).update(app_label=target)


def take_over_content_types(apps, schema_editor):
    _move(apps, "keys", "audit")


def give_back_content_types(apps, schema_editor):
    _move(apps, "audit", "keys")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("keys", "0015_move_audit_and_sign_in_models"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("seq", models.BigIntegerField(unique=True)),
                        ("created_at", models.DateTimeField(db_index=True)),
                        ("actor_username", models.CharField(blank=True, max_length=150)),
                        ("actor_email", models.CharField(blank=True, max_length=254)),
                        (
                            "action",
                            models.CharField(
                                choices=[
                                    ("mint.requested", "Mint Requested"),
                                    ("mint.issued", "Mint Issued"),
                                    ("mint.rejected", "Mint Rejected"),
                                    ("mint.unknown", "Mint Unknown"),
                                    ("mint.denied", "Mint Denied"),
                                    ("mint.duplicate", "Mint Duplicate"),
                                    ("mint.record_failed", "Mint Record Failed"),
                                    ("key.compensated", "Key Compensated"),
                                    ("key.compensation_failed", "Key Compensation Failed"),
                                    ("key.limit_requested", "Key Limit Requested"),
                                    ("key.limit_changed", "Key Limit Changed"),
                                    ("key.limit_failed", "Key Limit Failed"),
                                    ("key.revoked", "Key Revoked"),
                                    ("key.revoke_failed", "Key Revoke Failed"),
                                    ("key.deleted_upstream", "Key Deleted Upstream"),
                                    ("issuance.absent", "Issuance Absent"),
                                    ("mint.rate_limited", "Mint Rate Limited"),
                                    ("approval.requested", "Approval Requested"),
                                    ("approval.approved", "Approval Approved"),
                                    ("approval.denied", "Approval Denied"),
                                    ("approval.refused", "Approval Refused"),
                                    ("approval.used", "Approval Used"),
                                    ("onboarding.return_refused", "Onboarding Return Refused"),
                                    ("audit.viewed", "Audit Viewed"),
                                    ("audit.exported", "Audit Exported"),
                                    ("auth.signed_in", "Auth Signed In"),
                                    ("auth.sign_in_failed", "Auth Sign In Failed"),
                                    ("auth.signed_out", "Auth Signed Out"),
                                    ("policy.changed", "Policy Changed"),
                                    ("policy.deleted", "Policy Deleted"),
                                    ("template.changed", "Template Changed"),
                                    ("template.deleted", "Template Deleted"),
                                    ("user.access_changed", "User Access Changed"),
                                    ("user.password_changed", "User Password Changed"),
                                    ("user.deleted", "User Deleted"),
                                    ("group.permissions_changed", "Group Permissions Changed"),
                                ],
                                max_length=40,
                            ),
                        ),
                        (
                            "outcome",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending"),
                                    ("success", "Success"),
                                    ("denied", "Denied"),
                                    ("failure", "Failure"),
                                    ("unknown", "Unknown"),
                                ],
                                max_length=10,
                            ),
                        ),
                        ("key_name", models.CharField(blank=True, max_length=200)),
                        ("api_key_id", models.CharField(blank=True, max_length=64)),
                        ("monthly_limit", models.DecimalField(blank=True, decimal_places=2, max_digits=12, null=True)),
                        ("manage", models.CharField(blank=True, max_length=16)),
                        ("completions", models.CharField(blank=True, max_length=16)),
                        ("source_ip", models.GenericIPAddressField(blank=True, null=True)),
                        ("upstream_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("detail", models.CharField(blank=True, max_length=500)),
                        ("prev_hash", models.CharField(max_length=64)),
                        ("hash", models.CharField(max_length=64)),
                        (
                            "actor",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "issuance",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="events",
                                to="keys.issuance",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "keys_auditevent",
                        "ordering": ["-seq"],
                        "permissions": [("view_audit_log", "Can review and export the audit log")],
                        "indexes": [
                            models.Index(fields=["actor_username", "seq"], name="audit_actor_seq"),
                            models.Index(fields=["action", "seq"], name="audit_action_seq"),
                            models.Index(fields=["outcome", "seq"], name="audit_outcome_seq"),
                            models.Index(fields=["api_key_id", "seq"], name="audit_key_seq"),
                            models.Index(fields=["action", "created_at"], name="audit_action_time"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(take_over_content_types, give_back_content_types),
    ]
