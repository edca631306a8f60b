"""Sessions name the backend that signed their person in, and Django signs out a session whose
backend is no longer in AUTHENTICATION_BACKENDS. The backends moved from `keys.sso` to
`portal.accounts.backends` (issue 12): rewrite the name in the stored sessions, so nobody is
signed out by the upgrade. Sessions are decoded and encoded with Django's own session store."""

from django.db import migrations
from django.utils import timezone

BACKEND_SESSION_KEY = "_auth_user_backend"  # django.contrib.auth.BACKEND_SESSION_KEY
MOVED = {
    "keys.sso.PasswordBackend": "portal.accounts.backends.PasswordBackend",
    "keys.sso.OIDCBackend": "portal.accounts.backends.OIDCBackend",
}


def _rename(apps, mapping: dict[str, str]) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    Session = apps.get_model("sessions", "Session")
    store = SessionStore()
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        data = store.decode(session.session_data)
        if data.get(BACKEND_SESSION_KEY) in mapping:
            data[BACKEND_SESSION_KEY] = mapping[data[BACKEND_SESSION_KEY]]
            session.session_data = store.encode(data)
            session.save(update_fields=["session_data"])


def forwards(apps, schema_editor):
    _rename(apps, MOVED)


def backwards(apps, schema_editor):
    _rename(apps, {new: old for old, new in MOVED.items()})


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial"), ("sessions", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
