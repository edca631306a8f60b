"""The audit log moved to the `audit` app and single sign-on's records to `accounts`
(portal/audit, portal/accounts). Only Django's idea of which app owns them changes: the tables,
their rows, indexes, the PostgreSQL trigger and the chain-head function stay as they are. The new
apps' first migrations take the models over, with their content types and permissions."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("keys", "0014_audit_action_time_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel("AuditEvent"),
                migrations.DeleteModel("OIDCIdentity"),
                migrations.DeleteModel("SSOGroupGrant"),
            ],
            database_operations=[],
        )
    ]
