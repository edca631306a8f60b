"""Settings for the key portal, read from the environment (see docs/configuration.md and .env.example).

Safe by default: DEBUG is off and the production security settings are on unless the environment
turns them off. Secrets have no default outside sandbox mode; a missing one stops start-up.
"""

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

# Sandbox mode: the portal talks to the stand-in Requesty and says so on every page. It is an
# explicit switch and refuses to start with DEBUG off unless forced, so a production
# configuration cannot reach it by accident.
PORTAL_SANDBOX = env.bool("PORTAL_SANDBOX", default=False)
if PORTAL_SANDBOX and not DEBUG and not env.bool("PORTAL_SANDBOX_FORCE", default=False):
    raise ImproperlyConfigured(
        "PORTAL_SANDBOX is on while DEBUG is off. Sandbox mode is for local use; "
        "set PORTAL_SANDBOX_FORCE=true if you really mean to run it this way."
    )
_relaxed = DEBUG or PORTAL_SANDBOX


def _required(name: str, local_default: str) -> str:
    """A secret: only a local DEBUG run may fall back to a public placeholder (a forced sandbox
    with DEBUG off still needs real secrets)."""
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return local_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is off.")


SECRET_KEY = _required("SECRET_KEY", "sandbox-insecure-" + "k" * 50)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"] if _relaxed else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "portal.accounts",
    "portal.audit",
    "keys",
]

MIDDLEWARE = [
    "portal.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.inputs.RejectNulMiddleware",  # NUL bytes: a 400 before any view or query sees them
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.accounts.access.CurrentRequestMiddleware",  # who made an access change (access.py)
    "portal.caching.PrivatePagesMiddleware",  # Cache-Control: private, no-store when signed in
    "portal.accounts.idle.IdleTimeoutMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.errors.SandboxErrorPages",
    # Last, as django-axes asks: turns a sign-in it refused into the 429 sign-in page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "portal.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Threaded servers and a long-lived connection do not mix well with SQLite's locking.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # IMMEDIATE: a transaction takes the write lock when it begins, so audit appends queue up
    # instead of failing with "database is locked" when two of them race.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    from psycopg import IsolationLevel

    # The audit chain's lock-then-read-head and the mint's lock-then-count rely on each statement
    # seeing what committed before it (READ COMMITTED), whatever the server's default is.
    DATABASES["default"].setdefault("OPTIONS", {})["isolation_level"] = IsolationLevel.READ_COMMITTED

# Shared by every worker and instance: the spend figures' one-call-per-period gate (keys/usage.py)
# must hold across processes. Without CACHE_URL it is a table in the portal's own database, which
# `migrate` creates (keys/apps.py runs createcachetable after it); Redis is optional.
CACHES = {"default": env.cache("CACHE_URL", default="dbcache://portal_cache")}
if CACHES["default"]["BACKEND"].endswith("DatabaseCache"):
    # Django culls a third of the entries past 300 (by key order, so maybe the spend gate): room for
    # a chart per key and day instead; expired rows are culled first.
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 100_000)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
# The sign-in page says "You are signed out" and, even with OIDC_ONLY, does not send the person
# straight back to the provider (which would sign them in again at once).
LOGOUT_REDIRECT_URL = "/accounts/login/?signed-out=1"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Security ------------------------------------------------------------------------------------
_secure_default = not DEBUG
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_secure_default)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=_secure_default)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=_secure_default)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Django's database sessions: one table every worker and instance reads, so a sign-out ends the
# session everywhere at once (a per-process cache in front of it would not).
SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 60 * 60)
# Signed-in sessions also end after this long without a request (portal/accounts/idle.py).
PORTAL_IDLE_TIMEOUT = env.int("PORTAL_IDLE_TIMEOUT", default=2 * 60 * 60)
CSRF_COOKIE_HTTPONLY = True  # htmx takes the token from the page, never from the cookie

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
}

ADMINS = env.list("ADMINS", default=[])
SERVER_EMAIL = env.str("SERVER_EMAIL", default="portal@localhost")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=SERVER_EMAIL)
# EMAIL_URL names the mail server in one variable, e.g. smtp+tls://user:password@mail.example.com:587
_mail = env.email_url("EMAIL_URL", default="consolemail://" if _relaxed else "smtp://localhost:25")
MAILERS = {
    "default": {
        "BACKEND": _mail["EMAIL_BACKEND"],
        "OPTIONS": {
            k.removeprefix("EMAIL_").removeprefix("HOST_").lower(): v
            for k, v in _mail.items()
            if k
            in ("EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS", "EMAIL_USE_SSL")
        }
        | {"timeout": 10}
        if _mail["EMAIL_BACKEND"].endswith("smtp.EmailBackend")
        else {},
    }
}

# --- Requesty -------------------------------------------------------------------------------------
REQUESTY_BASE_URL = env.str("REQUESTY_BASE_URL", default="https://api.requesty.ai").rstrip("/")
if PORTAL_SANDBOX and not REQUESTY_BASE_URL.startswith(("http://127.0.0.1:", "http://localhost:")):
    # The banner promises keys from the stand-in; never let it sit on top of the real Requesty.
    raise ImproperlyConfigured("In sandbox mode REQUESTY_BASE_URL must point at the stand-in on 127.0.0.1.")
# Where people call models with their keys (OpenAI-compatible): shown with the new key's usage example.
REQUESTY_GATEWAY_URL = env.str("REQUESTY_GATEWAY_URL", default="https://router.requesty.ai/v1").rstrip("/")
# The name matches Django's "sensitive settings" pattern (TOKEN), so error pages hide it.
REQUESTY_ADMIN_TOKEN = _required("REQUESTY_ADMIN_TOKEN", "sandbox-admin-token")
REQUESTY_CONNECT_TIMEOUT = env.float("REQUESTY_CONNECT_TIMEOUT", default=5.0)
REQUESTY_READ_TIMEOUT = env.float("REQUESTY_READ_TIMEOUT", default=20.0)
# gunicorn.conf.py reads the same variable; the Requesty deadlines must end before it.
GUNICORN_TIMEOUT = env.int("GUNICORN_TIMEOUT", default=60)

# --- Audit ---------------------------------------------------------------------------------------
# Keys the audit log's hash chain. Keep it apart from the database: whoever holds both can rewrite
# history undetectably. Changing it makes every earlier event fail verification.
AUDIT_HMAC_KEY = _required("AUDIT_HMAC_KEY", "sandbox-audit-hmac-key")

# --- Portal policy --------------------------------------------------------------------------------
# The default spending policy, for users in no group with a policy (see keys/policy.py).
PORTAL_MAX_MONTHLY_LIMIT = Decimal(env.str("PORTAL_MAX_MONTHLY_LIMIT", default="100"))
PORTAL_MAX_TOTAL_MONTHLY_LIMIT = Decimal(env.str("PORTAL_MAX_TOTAL_MONTHLY_LIMIT", default="500"))
PORTAL_MAX_ACTIVE_KEYS = env.int("PORTAL_MAX_ACTIVE_KEYS", default=10)
PORTAL_MAX_COMPLETIONS = env.str("PORTAL_MAX_COMPLETIONS", default="write")
if PORTAL_MAX_COMPLETIONS not in ("none", "read", "write"):
    raise ImproperlyConfigured("PORTAL_MAX_COMPLETIONS must be none, read or write.")
PORTAL_ALLOW_MANAGE_REQUESTS = env.bool("PORTAL_ALLOW_MANAGE_REQUESTS", default=False)
# Mint attempts per user per rolling hour, counted in the database (holds across processes).
PORTAL_MINTS_PER_HOUR = env.int("PORTAL_MINTS_PER_HOUR", default=10)
# Limit changes per user (portal admins excepted) per rolling hour: each is two audit events and a
# Requesty call.
PORTAL_LIMIT_CHANGES_PER_HOUR = env.int("PORTAL_LIMIT_CHANGES_PER_HOUR", default=10)
# Approval requests one person may have waiting for a decision at once.
PORTAL_MAX_PENDING_APPROVALS = env.int("PORTAL_MAX_PENDING_APPROVALS", default=5)
if PORTAL_LIMIT_CHANGES_PER_HOUR < 1 or PORTAL_MAX_PENDING_APPROVALS < 1:
    raise ImproperlyConfigured("PORTAL_LIMIT_CHANGES_PER_HOUR and PORTAL_MAX_PENDING_APPROVALS must be at least 1.")
# After this many refused requests (mints, limit changes, approval requests) in a rolling hour, a
# user's further requests are refused unexamined;
# sign-in junk (bad SSO states, provider errors, unknown usernames) is audited at most this many
# times per kind per address per hour, then only logged (docs/security.md, "Bounded audit of refusals").
PORTAL_AUDIT_REFUSALS_PER_HOUR = env.int("PORTAL_AUDIT_REFUSALS_PER_HOUR", default=60)
if PORTAL_AUDIT_REFUSALS_PER_HOUR < 1:
    raise ImproperlyConfigured("PORTAL_AUDIT_REFUSALS_PER_HOUR must be at least 1.")
# How long an approved request may be used to mint.
PORTAL_APPROVAL_DAYS = env.int("PORTAL_APPROVAL_DAYS", default=7)
# How often `manage.py housekeeping` runs reconciliation (keys/housekeeping.py).
PORTAL_RECONCILE_MINUTES = env.int("PORTAL_RECONCILE_MINUTES", default=15)
if PORTAL_RECONCILE_MINUTES < 1:
    raise ImproperlyConfigured("PORTAL_RECONCILE_MINUTES must be at least 1.")
# --- Spend (keys/usage.py, keys/alerts.py, keys/idle.py) -------------------------------------------
# The organization's usage is fetched from Requesty at most once per this many seconds for the whole
# portal (lists, the spend page, alerts); a key's 30-day chart at most once per key in that time.
PORTAL_SPEND_CACHE_SECONDS = env.int("PORTAL_SPEND_CACHE_SECONDS", default=60)
if PORTAL_SPEND_CACHE_SECONDS < 1:
    raise ImproperlyConfigured("PORTAL_SPEND_CACHE_SECONDS must be at least 1.")
# Percentages of a key's (and a person's total) monthly limit at which its owner is e-mailed.
PORTAL_BUDGET_ALERTS = sorted({int(p) for p in env.list("PORTAL_BUDGET_ALERTS", default=["80", "100"])})
if any(p < 1 for p in PORTAL_BUDGET_ALERTS):
    raise ImproperlyConfigured("PORTAL_BUDGET_ALERTS must be whole percentages of at least 1, e.g. 80,100.")
# Each alert is also POSTed here as Slack-compatible JSON ({"text": ...}); empty: e-mail only.
PORTAL_ALERT_WEBHOOK_URL = env.str("PORTAL_ALERT_WEBHOOK_URL", default="")
# A key with no requests for this many days (from its creation if never used) gets one "still
# needed?" e-mail; at most 90, as Requesty's usage answers span at most 100 days.
PORTAL_IDLE_DAYS = env.int("PORTAL_IDLE_DAYS", default=60)
if not 1 <= PORTAL_IDLE_DAYS <= 90:
    raise ImproperlyConfigured("PORTAL_IDLE_DAYS must be between 1 and 90.")
# Revoke a key still idle this many days after that e-mail (0: never).
PORTAL_IDLE_REVOKE_DAYS = env.int("PORTAL_IDLE_REVOKE_DAYS", default=0)
if PORTAL_IDLE_REVOKE_DAYS < 0:
    raise ImproperlyConfigured("PORTAL_IDLE_REVOKE_DAYS must be 0 (never) or more.")
# The portal's address as people reach it (https://keys.example.com), for links in e-mails sent by
# `manage.py housekeeping` (expiry reminders, budget alerts, idle keys), which has no request to take it from.
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://localhost:8000" if _relaxed else "").rstrip("/")

# Key expiry (keys/expiry.py): the longest lifetime for people without a group policy (0: none),
# the reminder e-mails' days before expiry, and a rotation's longest grace period (at most 7 days).
PORTAL_MAX_KEY_DAYS = env.int("PORTAL_MAX_KEY_DAYS", default=90)
PORTAL_EXPIRY_REMINDER_DAYS = sorted({int(d) for d in env.list("PORTAL_EXPIRY_REMINDER_DAYS", default=["14", "3"])})
PORTAL_ROTATION_GRACE_HOURS = env.int("PORTAL_ROTATION_GRACE_HOURS", default=24)
if PORTAL_MAX_KEY_DAYS < 0 or any(d < 1 for d in PORTAL_EXPIRY_REMINDER_DAYS):
    raise ImproperlyConfigured("PORTAL_MAX_KEY_DAYS must be 0 or more, PORTAL_EXPIRY_REMINDER_DAYS days 1 or more.")
if not 1 <= PORTAL_ROTATION_GRACE_HOURS <= 7 * 24:
    raise ImproperlyConfigured("PORTAL_ROTATION_GRACE_HOURS must be between 1 and 168 (7 days).")
# Hosts "Continue onboarding" may lead to (HTTPS only), comma-separated.
ONBOARDING_RETURN_HOSTS = env.list("ONBOARDING_RETURN_HOSTS", default=[])
# How many reverse proxies in front of the portal append to X-Forwarded-For (0: use REMOTE_ADDR).
PORTAL_TRUSTED_PROXY_HOPS = env.int("PORTAL_TRUSTED_PROXY_HOPS", default=0)
# How long a rendered form (and its one-time nonce) stays valid.
PORTAL_FORM_MAX_AGE = env.int("PORTAL_FORM_MAX_AGE", default=2 * 60 * 60)

# --- Single sign-on (OpenID Connect; portal/accounts/oidc.py) -------------------------------------
# On when OIDC_CLIENT_ID, OIDC_CLIENT_SECRET and either OIDC_ISSUER or the explicit endpoints
# (authorization, token, JWKS) are set; otherwise sign-in is username and password, as before.
# Discovery ({OIDC_ISSUER}/.well-known/openid-configuration) happens at first use and is cached,
# never here, so start-up does not depend on the provider. Explicit endpoints win over discovery.
# portal/accounts/oidc.py fixes the protocol choices that must not be configurable: authorization
# code flow with PKCE (S256), state and nonce, RS256 ID tokens checked against the provider's JWKS,
# with audience, issuer and expiry verified.
OIDC_ISSUER = env.str("OIDC_ISSUER", default="")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
# The name matches Django's "sensitive settings" pattern (SECRET), so error pages hide it.
OIDC_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="SSO")  # "Sign in with <name>"
if OIDC_PROVIDER_NAME.startswith("["):  # audit details start with it; "[...]" tags bounded junk
    raise ImproperlyConfigured("OIDC_PROVIDER_NAME must not start with “[”.")
# Send the sign-in page straight to the provider (break-glass: /accounts/login/?break-glass=1).
OIDC_ONLY = env.bool("OIDC_ONLY", default=False)
# While SSO is on, may superusers still sign in with a password (break-glass)? Nobody else can.
OIDC_BREAK_GLASS = env.bool("OIDC_BREAK_GLASS", default=True)
# Only these e-mail domains may sign in (comma-separated; empty: any the provider vouches for).
OIDC_ALLOWED_EMAIL_DOMAINS = [d.strip().lower().lstrip("@") for d in env.list("OIDC_ALLOWED_EMAIL_DOMAINS", default=[])]
# Link a first SSO sign-in to an existing (non-superuser) account with the same e-mail, when the
# provider asserts email_verified: true. Off: such a sign-in is refused (docs/sso.md).
OIDC_LINK_EXISTING_BY_EMAIL = env.bool("OIDC_LINK_EXISTING_BY_EMAIL", default=False)
# The claim that lists a person's groups; provider groups in OIDC_ADMIN_GROUPS make portal admins,
# and a provider group named like a portal group with a spending policy puts the person in it.
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
OIDC_ADMIN_GROUPS = env.list("OIDC_ADMIN_GROUPS", default=[])
OIDC_SCOPES = env.str("OIDC_SCOPES", default="openid email profile")
OIDC_AUTHORIZATION_ENDPOINT = env.str("OIDC_AUTHORIZATION_ENDPOINT", default="")
OIDC_TOKEN_ENDPOINT = env.str("OIDC_TOKEN_ENDPOINT", default="")
OIDC_USERINFO_ENDPOINT = env.str("OIDC_USERINFO_ENDPOINT", default="")
OIDC_JWKS_ENDPOINT = env.str("OIDC_JWKS_ENDPOINT", default="")
# Seconds to connect to, and then to read from, the provider (discovery, token, JWKS, userinfo).
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=5.0)
# Minting a key needs a sign-in within this many seconds; older sessions sign in again first,
# through the provider with max_age=<this> and prompt=<OIDC_REAUTH_PROMPT> (empty: no prompt).
PORTAL_MINT_REAUTH_SECONDS = env.int("PORTAL_MINT_REAUTH_SECONDS", default=12 * 60 * 60)
OIDC_REAUTH_PROMPT = env.str("OIDC_REAUTH_PROMPT", default="login")
# First the sign-in throttle (django-axes' gatekeeper, first as its docs require; it never signs
# anyone in), then passwords (break-glass superusers only while SSO is on), then SSO (inert while
# it is off).
AUTHENTICATION_BACKENDS = [
    "portal.accounts.throttle.PasswordThrottleBackend",
    "portal.accounts.backends.PasswordBackend",
    "portal.accounts.backends.OIDCBackend",
]
# A trip to the provider can start with a form (a mint whose sign-in is too old, posted without
# JavaScript), and browsers apply form-action to every redirect after a form: allow its origin.
for _url in (OIDC_ISSUER, OIDC_AUTHORIZATION_ENDPOINT):
    if _url.startswith(("https://", "http://")):
        _origin = "{0.scheme}://{0.netloc}".format(urlsplit(_url))
        if _origin not in SECURE_CSP["form-action"]:
            SECURE_CSP["form-action"].append(_origin)

# --- Password sign-in throttling (django-axes; portal/accounts/throttle.py) ----------------------
# After this many failed password sign-ins in a row for one username from one client address, that
# pair is refused (429) for PORTAL_SIGN_IN_LOCKOUT_MINUTES after the last failure. Single sign-on is
# never throttled. Counted in the database, so it holds across workers and instances.
PORTAL_SIGN_IN_FAILURE_LIMIT = env.int("PORTAL_SIGN_IN_FAILURE_LIMIT", default=5)
PORTAL_SIGN_IN_LOCKOUT_MINUTES = env.int("PORTAL_SIGN_IN_LOCKOUT_MINUTES", default=15)
if PORTAL_SIGN_IN_FAILURE_LIMIT < 1 or PORTAL_SIGN_IN_LOCKOUT_MINUTES < 1:
    # 0 minutes would make axes lock out for ever (no cool-off); 0 failures would refuse everyone.
    raise ImproperlyConfigured("PORTAL_SIGN_IN_FAILURE_LIMIT and PORTAL_SIGN_IN_LOCKOUT_MINUTES must be at least 1.")
AXES_FAILURE_LIMIT = PORTAL_SIGN_IN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=PORTAL_SIGN_IN_LOCKOUT_MINUTES)
# Username and address together: one client cannot lock a person out from elsewhere, and a
# shared office address does not lock out everyone behind it (docs/security.md, "Sign-in throttling").
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The address the audit log records: REMOTE_ADDR, or what PORTAL_TRUSTED_PROXY_HOPS proxies saw.
AXES_CLIENT_IP_CALLABLE = "portal.audit.chain.client_ip"
AXES_WHITELIST_CALLABLE = "portal.accounts.throttle.not_a_password_attempt"
AXES_LOCKOUT_CALLABLE = "portal.accounts.throttle.lockout_response"
AXES_RESET_ON_SUCCESS = True
# A refused attempt is neither written down nor extends the lockout: no write per attempt while
# locked, and the page can say exactly when it ends.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Successful sign-ins are already in the audit log; no second, ever-growing table.
AXES_DISABLE_ACCESS_LOG = True
# Masked in what axes stores (post_data) and logs; it always masks "password".
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "password", "csrfmiddlewaretoken"]
AXES_VERBOSE = False  # no start-up banner in every manage.py command's output

# Error reports hide CSRF secrets and the session cookie too (portal/errors.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "portal.errors.ReportFilter"

# --- Logging: one JSON object per line, control characters escaped -------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "portal.jsonlog.JsonFormatter"}},
    "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json"},
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            "level": "ERROR",
            "filters": ["require_debug_false"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Both propagate to the root's JSON console handler; errors also e-mail ADMINS.
        "django": {"handlers": ["mail_admins"], "level": LOG_LEVEL},
        "keys": {"handlers": ["mail_admins"], "level": LOG_LEVEL},
        # A request for a host not in ALLOWED_HOSTS is anyone's to send: logged, never e-mailed.
        "django.security.DisallowedHost": {"handlers": ["console"], "propagate": False},
        # At DEBUG it logs whole template contexts (CSRF tokens, settings): never wanted in logs.
        "django.template": {"level": "INFO"},
    },
}
