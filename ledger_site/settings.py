"""Settings for the Shared Ledger site.

Everything that differs between machines comes from the environment (one
reader, django-environ). With nothing set the site runs on an embedded PostgreSQL
(the pgserver wheel) and an in-process cache, which is what ``make run`` uses; production sets
``DATABASE_URL``, ``REDIS_URL`` and ``DJANGO_SECRET_KEY``.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from ledger_site.logging import configure_structlog, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)

_DEV_SECRET_KEY = "django-insecure-dev-only-key-never-use-in-production"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(50))'`), "
            "or set DJANGO_DEBUG=1 for local development."
        )
    SECRET_KEY = _DEV_SECRET_KEY

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    # Before django.contrib.auth: its createsuperuser checks usernames as
    # registration does (ledger_site/management/commands/createsuperuser.py).
    "ledger_site",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "django_ratelimit",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ledger_core",
    "content_app",
    "rewards_app",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "ledger_site.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "ledger_core.middleware.DryRunMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Messages are for the admin only; the session holds them. (The default
# fallback storage builds a signed-cookie store and a session store on every
# request, API calls included.)
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "ledger_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "ledger_site.wsgi.application"

# --- Database -------------------------------------------------------------
# PostgreSQL (psycopg 3) only: the ledger's invariants are PostgreSQL SQL
# (ledger_core.checks refuses any other engine). DATABASE_URL names the server;
# without it (`make run`) an embedded PostgreSQL is started from the pgserver
# wheel under var/pgdata or EMBEDDED_PGDATA (ledger_site.embedded; `make stop`
# stops it), so a first try needs no server.
# The engine is django-prometheus's wrapper of Django's own, which counts
# queries, errors and connections per database in /metrics.
if env.str("DATABASE_URL", default=""):
    DATABASES = {
        "default": env.db("DATABASE_URL", engine="django_prometheus.db.backends.postgresql")
    }
else:
    from ledger_site.embedded import data_dir, embedded_database

    DATABASES = {"default": embedded_database(data_dir())}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
# A server that accepts connections and never answers (frozen, or a dead path
# through the network) costs a request this many seconds and a 503, not a
# worker held until gunicorn's timeout (libpq's connect_timeout; a
# `?connect_timeout=` in DATABASE_URL wins).
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
)
# Persistent connections are checked (SELECT 1) before a request reuses them,
# so a server restart costs no failed request (see docs/performance.md).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_HEALTH_CHECKS", default=True)
# Prepared statements (Django's documented psycopg 3 options): parameters are
# bound by the server, and a statement a connection has run 5 times is kept
# parsed and planned there. Planning the post's statement and the write's
# user look-up costs PostgreSQL more than running them; the same-run A/B is
# in docs/performance.md. Turn it off (0) behind a pooler in transaction mode
# that cannot keep prepared statements (PgBouncer before 1.21, or without
# max_prepared_statements).
if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ---------------------------------------------------------------
# Two aliases: "default" for anything a library caches, "ratelimit" for the
# rate-limit counters (own key prefix, so flushing one never resets the
# other). Balances are never cached (ledger_core.selectors). Redis calls get
# short timeouts and no retries: when Redis is slow or gone, rate limiting
# fails open (logged and counted) instead of requests hanging on a dead socket.
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    _REDIS_OPTIONS = {
        "SOCKET_CONNECT_TIMEOUT": env.float("REDIS_CONNECT_TIMEOUT", default=0.25),
        "SOCKET_TIMEOUT": env.float("REDIS_TIMEOUT", default=0.25),
    }
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="ledger"),
            "OPTIONS": _REDIS_OPTIONS,
        },
        "ratelimit": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="ledger") + "-rl",
            "OPTIONS": _REDIS_OPTIONS,
        },
    }
else:
    # No Redis (the `make run` default): in-process memory. Each process then
    # has its own rate-limit counters, so under
    # several workers a limit would be enforced per worker (limit x workers).
    # That is fine for the single-process development server and is why
    # production sets REDIS_URL: Redis is what makes the counters shared.
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache",
            "LOCATION": "ledger-balances",
        },
        "ratelimit": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "ledger-ratelimit",
        },
    }

# --- Rate limiting (django-ratelimit counters, checked after DRF auth) -----
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)
RATELIMIT_USE_CACHE = "ratelimit"
# A cache that cannot count lets the request through (see ledger_site.ratelimit).
RATELIMIT_FAIL_OPEN = True
# Behind a reverse proxy, set to the header carrying the client address
# (e.g. HTTP_X_REAL_IP); the default is the socket peer.
RATELIMIT_IP_META_KEY = env.str("RATELIMIT_IP_META_KEY", default="") or None
RATE_LIMIT_LEDGER_WRITE = env.str("RATE_LIMIT_LEDGER_WRITE", default="120/m")
RATE_LIMIT_LEDGER_READ = env.str("RATE_LIMIT_LEDGER_READ", default="600/m")
RATE_LIMIT_AUTH = env.str("RATE_LIMIT_AUTH", default="20/m")

# --- Auth -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "/api/auth/session/login/"
# ModelBackend with a user's permissions in one statement (ledger_site.backends).
AUTHENTICATION_BACKENDS = [
    env.str("LEDGER_AUTH_BACKEND", default="ledger_site.backends.LedgerModelBackend")
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # JWT first: its WWW-Authenticate header is what a 401 advertises.
        "ledger_site.jwt.LedgerJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        # DRF's, with a nesting limit (a deeply nested body is a 400, not a 500).
        "ledger_core.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "ledger_core.api.exceptions.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["ledger_site.ratelimit.RateLimit"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    # Reads authenticate from the token's claims (ledger_site.jwt).
    "TOKEN_USER_CLASS": "ledger_site.jwt.LedgerTokenUser",
    # Tokens carry a hash of the password hash: a password change refuses
    # older tokens for writes and refreshes at once.
    "CHECK_REVOKE_TOKEN": True,
}

# --- Email (password reset links) --------------------------------------------
# EMAIL_URL, e.g. smtp+tls://user:password@smtp.example.com:587 (django-environ's
# email URLs). Without it, debug prints mail on the console, and production
# sends none: a password reset request answers 503 rather than accept
# requests whose mail goes nowhere.
# The URL itself (it may hold the mail server's password) is not kept as a
# setting: settings are what a debug page shows.
_email_url = env.str("EMAIL_URL", default="") or ("consolemail://" if DEBUG else "")
if _email_url:
    vars().update(env.email_url_config(_email_url))
# Whether mail can be sent at all.
EMAIL_ENABLED = bool(_email_url)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ledger@localhost")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
# How long a reset link works (seconds; it also stops working once used).
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3600)
# Where the mail sends the user: a page of yours that takes {uid} and {token}
# and posts them with the new password to /api/auth/password/reset/confirm/.
# Empty: the mail gives the uid, the token and that API call.
PASSWORD_RESET_URL = env.str("PASSWORD_RESET_URL", default="")
# Reset links go only to a verified address: registration and an address
# change mail a verification link, which works this long (seconds)...
EMAIL_VERIFY_TIMEOUT = env.int("EMAIL_VERIFY_TIMEOUT", default=3 * 24 * 3600)
# ...to your page taking {token} (it posts it to /api/auth/email/verify/);
# empty: the mail gives the token and that API call.
EMAIL_VERIFY_URL = env.str("EMAIL_VERIFY_URL", default="")

# --- Ledger ---------------------------------------------------------------
# Per-site overrides of operation amounts/policies, e.g. {"DAILY_REWARD": 2}.
LEDGER_OPERATION_CONFIG: dict = {}
LEDGER_MAX_ENTRY_AMOUNT = env.int("LEDGER_MAX_ENTRY_AMOUNT", default=1_000_000)
LEDGER_COMMAND_APP = env.str("LEDGER_COMMAND_APP", default="content")
LEDGER_WEBHOOK_DISABLE_AFTER = env.int("LEDGER_WEBHOOK_DISABLE_AFTER", default=24 * 3600)
LEDGER_WEBHOOK_BACKOFF_MAX = env.int("LEDGER_WEBHOOK_BACKOFF_MAX", default=600)
LEDGER_WEBHOOK_TIMEOUT = env.float("LEDGER_WEBHOOK_TIMEOUT", default=10.0)
LEDGER_WEBHOOK_ALLOW_PRIVATE = env.bool("LEDGER_WEBHOOK_ALLOW_PRIVATE", default=False)
LEDGER_WEBHOOK_PROXY = env.str("LEDGER_WEBHOOK_PROXY", default="")
LEDGER_EVENTS_MAX_WAIT = env.int("LEDGER_EVENTS_MAX_WAIT", default=30)
LEDGER_EVENTS_MAX_WAITING = env.int("LEDGER_EVENTS_MAX_WAITING", default=2)
LEDGER_PLAIN_REPRESENTATION = env.bool("LEDGER_PLAIN_REPRESENTATION", default=True)

# --- I18N / time ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------
# WhiteNoise serves them under gunicorn: compressed, with hashed names and
# far-future cache headers once `collectstatic` has run (the image does it at
# build time). Without a manifest (tests, a fresh checkout) names stay unhashed
# instead of failing.
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# Before collectstatic, files are found in the apps (WhiteNoise's finders).
WHITENOISE_USE_FINDERS = not (STATIC_ROOT / "staticfiles.json").exists()
if WHITENOISE_USE_FINDERS:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "ledger_site.storage.StaticStorage"},
}

# --- HTTPS hardening -----------------------------------------------------------
# On by default whenever DEBUG is off; DJANGO_SECURE=0 for plain HTTP on a
# trusted network (the test suite, a private load test).
SECURE = env.bool("DJANGO_SECURE", default=not DEBUG)
if SECURE:
    SECURE_SSL_REDIRECT = True
    # Probes and scrapes come over plain HTTP from inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
    # TLS ends at the reverse proxy, which says so in X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is a commitment for the whole domain and its subdomains
    # that an operator makes deliberately (DJANGO_HSTS_PRELOAD=1), not a default.
    "security.W021",
]
if not REDIS_URL:
    # The in-process counters of `make run` are not shared between processes
    # (django-ratelimit says so as E003/W001); the development server is one
    # process. Production sets REDIS_URL and gets the check back.
    SILENCED_SYSTEM_CHECKS += ["django_ratelimit.E003", "django_ratelimit.W001"]

# --- API schema (drf-spectacular, assets served locally by the sidecar) ------
SPECTACULAR_SETTINGS = {
    "TITLE": "Shared Ledger API",
    "DESCRIPTION": (
        "One credits wallet per owner, shared by the apps of one site. Every error "
        'body is {"code", "detail", ...}. Posts are idempotent by nonce: a retry '
        "with the same payload answers 200 with `Idempotent-Replayed: true`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # System fonts: nothing is loaded from another origin.
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif"},
                "code": {"fontFamily": "ui-monospace, SFMono-Regular, Menlo, monospace"},
            }
        }
    },
    "SCHEMA_PATH_PREFIX": r"/api/",
    "PREPROCESSING_HOOKS": ["ledger_site.schema.exclude_session_login"],
    # The event types appear in the feed, its filter and webhook subscriptions.
    "ENUM_NAME_OVERRIDES": {"EventTypeEnum": "ledger_core.events.EVENT_TYPES"},
}

# --- Logging --------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="json").lower()
configure_structlog()
LOGGING = logging_config(LOG_LEVEL, LOG_FORMAT)

# --- Metrics ----------------------------------------------------------------
# Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set by docker/gunicorn.conf.py)
# makes /metrics aggregate every worker's samples. Management commands run
# with the same environment, so the directory must exist for them too.
PROMETHEUS_EXPORT_MIGRATIONS = False
# With a token, /metrics answers only `Authorization: Bearer <token>` (what
# Prometheus sends with `authorization: {credentials_file: ...}`); without
# one it is open, for a network where only Prometheus reaches it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if env.str("PROMETHEUS_MULTIPROC_DIR", default=""):
    Path(env.str("PROMETHEUS_MULTIPROC_DIR")).mkdir(parents=True, exist_ok=True)
