"""Test settings: the production settings module with test-only environment defaults.

DATABASE_URL from the environment is honoured, so `.ci/run` can run the suite on PostgreSQL.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 50)
os.environ.setdefault("AUDIT_HMAC_KEY", "test-audit-hmac-key")
os.environ.setdefault("REQUESTY_ADMIN_TOKEN", "ADMIN-TOKEN-CANARY-6f1d2c")
os.environ.setdefault("REQUESTY_BASE_URL", "http://127.0.0.1:9")  # tests point it at the stand-in
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("ADMINS", "ops@example.com")
os.environ.setdefault("REQUESTY_CONNECT_TIMEOUT", "2")
os.environ.setdefault("REQUESTY_READ_TIMEOUT", "3")
os.environ.setdefault("LOG_LEVEL", "DEBUG")

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not Django's default in-memory test database: with an in-memory one the live server
    # shares the test thread's one connection with every request thread, and two requests at once
    # (a page's lazy loads and the next click) then misuse it ("bad parameter or other API misuse").
    import tempfile

    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"portal-tests-{os.getpid()}.sqlite3")}  # noqa: F405
