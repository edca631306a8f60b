"""Django's database sessions, read with one plain statement per request.

Every signed-in request loads its session; Django builds that lookup through the ORM each time,
which cost about four times the query itself (docs/performance.md). Only the read is replaced:
saving, expiry, `clearsessions` and the table are Django's own.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        model = self.model
        connection = connections[router.db_for_read(model)]
        table = connection.ops.quote_name(model._meta.db_table)
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT session_data FROM {table} WHERE session_key = %s AND expire_date > %s",  # noqa: S608 (model metadata)
                [self.session_key, now],
            )
            row = cursor.fetchone()
        if row is None:  # unknown or expired: a new session, as Django does
            self._session_key = None
            return None
        return model(session_key=self.session_key, session_data=row[0])
