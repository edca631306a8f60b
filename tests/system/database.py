"""A throw-away PostgreSQL database for one run of the portal (tests/system/harness.py).

It lives beside the database the admin URL names, on the same server; the portal is migrated as
that URL's superuser and then uses its own login role, which may only read and write rows
(`GRANT SELECT, INSERT, UPDATE, DELETE`). A test can therefore revoke the portal's rights, shut
the database to new connections and end the portal's sessions without touching anyone else's.
"""

from __future__ import annotations

import re
from contextlib import suppress
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_FORBIDDEN_DB_NAMES = {"postgres", "test_postgres", "root", "test_root", "template0", "template1"}


class Database:
    """Our own database and login role (same name) on a shared server; never anyone else's."""

    def __init__(self, admin_url: str, name: str) -> None:
        parts = urlsplit(admin_url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("the admin URL must be a postgres:// URL")
        if parts.hostname not in LOOPBACK:
            raise ValueError("the database server must be on this machine (127.0.0.1)")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or name in _FORBIDDEN_DB_NAMES:
            raise ValueError(f"refusing database name {name!r}")
        self.name = self.role = name
        # CREATE/DROP DATABASE run from the maintenance database, as Django's test runner does:
        # the URL's own database need not exist (pytest-django only creates test_<name>).
        self.admin_url = urlunsplit(parts._replace(path="/postgres"))
        self.owner_url = urlunsplit(parts._replace(path="/" + name))  # the admin URL's (super)user
        host = f"{parts.hostname}:{parts.port or 5432}"
        self.app_url = urlunsplit(parts._replace(netloc=f"{self.role}@{host}", path="/" + name))
        self.created = False

    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def connect(self):
        """A superuser connection to our database: sweeps, invariant queries, privilege changes."""
        import psycopg

        return psycopg.connect(self.owner_url, autocommit=True, connect_timeout=10)

    def create(self, *, reuse: bool = False) -> bool:
        """A fresh database and role; with `reuse`, an existing one is kept as it is (a benchmark's
        seeded data). True when it was created now."""
        from psycopg import sql

        with self._admin() as conn:
            self.created = True
            if reuse and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.name]).fetchone():
                return False
            ident = sql.Identifier(self.name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        return True

    def grant_app_role(self) -> None:
        """Run after migrate: the portal's role may read and write rows, nothing more."""
        from psycopg import sql

        role = sql.Identifier(self.role)
        with self.connect() as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            rows = "SELECT, INSERT, UPDATE, DELETE"
            conn.execute(sql.SQL(f"GRANT {rows} ON ALL TABLES IN SCHEMA public TO {{}}").format(role))
            conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))

    def set_table_rights(self, table: str, rights: str, *, granted: bool) -> None:
        from psycopg import sql

        template = "GRANT {} ON {} TO {}" if granted else "REVOKE {} ON {} FROM {}"
        if not re.fullmatch(r"[A-Z, ]+", rights):
            raise ValueError(rights)
        with self.connect() as conn:
            conn.execute(sql.SQL(template).format(sql.SQL(rights), sql.Identifier(table), sql.Identifier(self.role)))

    def allow_connections(self, allowed: bool) -> None:
        """Close (or reopen) our database to every new connection, then cut the portal's sessions:
        to the portal the database is gone. The shared server is untouched."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(self.name), sql.SQL("true" if allowed else "false")
                )
            )
            if not allowed:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                    [self.name, self.role],
                )

    def drop(self) -> None:
        if not self.created:
            return
        from psycopg import sql

        with self._admin() as conn:
            ident = sql.Identifier(self.name)
            with suppress(Exception):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        self.created = False

    def comment(self) -> str | None:
        """The database's COMMENT (a benchmark notes there what it seeded); None if it has none."""
        with self._admin() as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [self.name]
            ).fetchone()
        return row[0] if row else None

    def set_comment(self, text: str) -> None:
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(self.name), sql.Literal(text)))

    def tables(self, conn) -> list[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]
