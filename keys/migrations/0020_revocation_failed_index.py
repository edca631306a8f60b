"""Admins' "All keys": the active keys whose revocation failed, read from a small partial index
(keys/listing.revocation_failures) instead of the whole key table on every page."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0019_spend"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="issuedkey",
            index=models.Index(
                condition=models.Q(("revocation_failed_at__isnull", False), ("status", "active")),
                fields=["revocation_failed_at", "id"],
                name="issuedkey_revocation_failed",
            ),
        ),
    ]
