"""Single sign-on's records, taken over from the keys app (keys 0015): the tables keep their names
and rows; only the models' owner and content types change."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


MODELS = ("oidcidentity", "ssogroupgrant")


def _move(apps, source: str, target: str) -> None:
    """Hand the content types (and so the permissions, and every group's and user's grants of
    them) from one app label to the other."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not ContentType.objects.filter(app_label=target, model=model).exists():
            ContentType.objects.filter(app_label=source, model=model).update(app_label=target)


def take_over_content_types(apps, schema_editor):
    _move(apps, "keys", "accounts")


def give_back_content_types(apps, schema_editor):
    _move(apps, "accounts", "keys")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("keys", "0015_move_audit_and_sign_in_models"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="OIDCIdentity",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("issuer", models.CharField(max_length=255)),
                        ("subject", models.CharField(max_length=255)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_sign_in_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="oidc_identities",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "OpenID Connect identity",
                        "verbose_name_plural": "OpenID Connect identities",
                        "db_table": "keys_oidcidentity",
                        "constraints": [
                            models.UniqueConstraint(fields=("issuer", "subject"), name="oidc_identity_issuer_subject")
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="SSOGroupGrant",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("granted_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "group",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE, related_name="sso_grants", to="auth.group"
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="sso_group_grants",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "group membership granted by single sign-on",
                        "verbose_name_plural": "group memberships granted by single sign-on",
                        "db_table": "keys_ssogroupgrant",
                        "constraints": [
                            models.UniqueConstraint(fields=("user", "group"), name="sso_group_grant_user_group")
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(take_over_content_types, give_back_content_types),
    ]
