"""Hash-chain the audit log: number existing events, hash them in order, add filter indexes."""

import hashlib
import hmac
import json
from datetime import UTC
from decimal import Decimal

from django.conf import settings
from django.db import migrations, models

FIELDS = (
    "seq", "created_at", "actor_id", "actor_username", "actor_email", "action", "outcome", "issuance_id",
    "key_name", "api_key_id", "monthly_limit", "manage", "completions", "source_ip", "upstream_status", "detail",
)


def _value(value):
    # A frozen copy of keys.audit.canonical at the time of this migration.
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if hasattr(value, "isoformat"):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)


def chain_existing(apps, schema_editor):
    AuditEvent = apps.get_model("keys", "AuditEvent")
    key = settings.AUDIT_HMAC_KEY.encode()
    previous = "0" * 64
    for seq, event in enumerate(AuditEvent.objects.order_by("id"), start=1):
        event.seq = seq
        data = {name: _value(getattr(event, name)) for name in FIELDS}
        body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hmac.new(key, (previous + body).encode(), hashlib.sha256).hexdigest()
        AuditEvent.objects.filter(pk=event.pk).update(seq=seq, prev_hash=previous, hash=digest)
        previous = digest


class Migration(migrations.Migration):
    dependencies = [("keys", "0001_initial")]

    operations = [
        migrations.AddField("auditevent", "seq", models.BigIntegerField(null=True)),
        migrations.AddField("auditevent", "prev_hash", models.CharField(max_length=64, default="")),
        migrations.AddField("auditevent", "hash", models.CharField(max_length=64, default="")),
        migrations.AlterField("auditevent", "created_at", models.DateTimeField(db_index=True)),
        migrations.RunPython(chain_existing, migrations.RunPython.noop),
        migrations.AlterField("auditevent", "seq", models.BigIntegerField(unique=True)),
        migrations.AlterField("auditevent", "prev_hash", models.CharField(max_length=64)),
        migrations.AlterField("auditevent", "hash", models.CharField(max_length=64)),
        migrations.AlterField(
            "auditevent",
            "action",
            models.CharField(
                max_length=40,
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
                    ("audit.viewed", "Audit Viewed"),
                    ("audit.exported", "Audit Exported"),
                ],
            ),
        ),
        migrations.AlterModelOptions(
            name="auditevent",
            options={
                "ordering": ["-seq"],
                "permissions": [("view_audit_log", "Can review and export the audit log")],
            },
        ),
        migrations.AddIndex("auditevent", models.Index(fields=["actor_username", "seq"], name="audit_actor_seq")),
        migrations.AddIndex("auditevent", models.Index(fields=["action", "seq"], name="audit_action_seq")),
        migrations.AddIndex("auditevent", models.Index(fields=["outcome", "seq"], name="audit_outcome_seq")),
        migrations.AddIndex("auditevent", models.Index(fields=["api_key_id", "seq"], name="audit_key_seq")),
    ]
