"""On PostgreSQL, refuse UPDATE, DELETE and TRUNCATE on the audit table in the database itself,
and create the "Portal admins" group (portal admin + audit log permissions)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION keys_auditevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'keys_auditevent is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER keys_auditevent_no_update_delete BEFORE UPDATE OR DELETE ON keys_auditevent
    FOR EACH ROW EXECUTE FUNCTION keys_auditevent_append_only();
CREATE TRIGGER keys_auditevent_no_truncate BEFORE TRUNCATE ON keys_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION keys_auditevent_append_only();
"""
DROP_SQL = """
DROP TRIGGER IF EXISTS keys_auditevent_no_update_delete ON keys_auditevent;
DROP TRIGGER IF EXISTS keys_auditevent_no_truncate ON keys_auditevent;
DROP FUNCTION IF EXISTS keys_auditevent_append_only();
"""


def install_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER_SQL, params=None)


def remove_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


def create_group(apps, schema_editor):
    for app_config in apps.get_app_configs():  # permissions normally appear only after migrate
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Portal admins")
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="keys", codename__in=["portal_admin", "view_audit_log"])
    )


class Migration(migrations.Migration):
    dependencies = [("keys", "0002_audit_chain"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [
        migrations.RunPython(install_trigger, remove_trigger),
        migrations.RunPython(create_group, migrations.RunPython.noop),
    ]
