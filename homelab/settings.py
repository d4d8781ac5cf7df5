"""Settings for homelab: every knob comes from the environment (see .env.example).

Small typed helpers (homelab/env.py) read each variable and raise ImproperlyConfigured
naming the variable when its value is bad, so a typo stops start-up instead of running
with a surprising default.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from homelab.env import (
    LOG_LEVELS,
    dev_secret_key,
    env_bool,
    env_choice,
    env_directory,
    env_int,
    env_list,
    env_networks,
    env_origins,
    env_rate,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent


DEBUG = env_bool("DJANGO_DEBUG", False)
# Unset, it is the key `make run` generated, so management commands run as the README and
# the error hints print them. Set but empty is a mistake (an unfilled env file): refused.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY")
if SECRET_KEY is None:
    SECRET_KEY = dev_secret_key(BASE_DIR / ".dev-secret-key")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set; set it to a long random string "
            "(or DJANGO_DEBUG=1 for local development)."
        )
    SECRET_KEY = "insecure-development-key-only-for-debug"  # noqa: S105 (DEBUG only)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    # No "daphne" app: it only swaps runserver for daphne's, and importing it (twisted, its
    # reactor, TLS) cost every manage.py call ~0.3 s. `make run` starts daphne itself.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "channels",
    "commands",
]

MIDDLEWARE = [
    # First: it answers CORS preflights itself, before authentication (a preflight never
    # carries the API key) and before anything else can answer them.
    "corsheaders.middleware.CorsMiddleware",
    # A NUL in a URL is a 400 before it reaches the database (PostgreSQL refuses it).
    "commands.api.handlers.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "homelab.urls"
WSGI_APPLICATION = "homelab.wsgi.application"
ASGI_APPLICATION = "homelab.asgi.application"

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

# Read for every database so a bad value is refused anywhere; it applies to PostgreSQL.
HOMELAB_DB_POOL_SIZE = env_int("HOMELAB_DB_POOL_SIZE", 0, minimum=0, maximum=200)
try:
    DATABASES = {
        "default": dj_database_url.parse(
            env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if DATABASES["default"].get("CONN_MAX_AGE"):
    # A connection kept between requests is checked before its first use in each: one a
    # restart or idle_session_timeout cut is replaced instead of failing a request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves concurrent requests from threads: WAL lets readers
    # and a writer overlap, IMMEDIATE takes the write lock up front (no upgrade
    # deadlocks), and a busy timeout makes writers queue instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A PostgreSQL that accepts the TCP connection and never answers (a stuck server, a
    # dead link) would hold a request for ever: give up after 5 s, and the API answers
    # 503 `unavailable` (commands/api/handlers.py). `?connect_timeout=N` in the URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # Opt-in: Django's own pool (psycopg_pool) instead of a new connection per request and
    # another after SSH, ~3 ms each on a local server (docs/performance.md, issue 12). No
    # request holds one while its command runs: it goes back to the pool, which checks it
    # before reuse (one cut by a restart is replaced) and closes it after 60 s unused. Off
    # (0) by default: the pool's idle connections need idle_session_timeout (or pgbouncer's
    # server_idle_timeout) above 60 s, and issue 10 wants none open during a command.
    if HOMELAB_DB_POOL_SIZE:
        if DATABASES["default"].get("CONN_MAX_AGE"):
            # Django refuses a pool with persistent connections, but only at the first
            # query: say so at start-up, naming both variables.
            raise ImproperlyConfigured(
                "HOMELAB_DB_POOL_SIZE and DATABASE_CONN_MAX_AGE cannot both be set: the pool "
                "already keeps connections. Unset DATABASE_CONN_MAX_AGE (or set it to 0)."
            )
        # Django checks a pooled connection before handing it out only with this on.
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 0,
            "max_size": HOMELAB_DB_POOL_SIZE,
            "max_idle": 60,
            "timeout": 10,
        }

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "homelab",
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A receive blocks in Redis for up to 5 s (channels_redis' brpop_timeout), and
            # redis-py's default socket timeout is 5 s too: every idle receive timed out
            # client-side ("cancel listener lost the channel layer (TimeoutError)" every
            # 6 s). The read may wait longer than the block; a `socket_timeout` in
            # REDIS_URL still wins.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 10}]},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# In development the finders serve files straight from the apps, so `make run` works
# before (or without) collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- homelab knobs -------------------------------------------------------------------
HOMELAB_SSH_KEY_FILE = env_str("HOMELAB_SSH_KEY_FILE")
HOMELAB_EXECUTE_RATE = env_rate("HOMELAB_EXECUTE_RATE", "10/min")
HOMELAB_COMMAND_TIMEOUT = env_int("HOMELAB_COMMAND_TIMEOUT", 30, minimum=1, maximum=3600)
HOMELAB_OUTPUT_LIMIT = env_int("HOMELAB_OUTPUT_LIMIT", 10240, minimum=1, maximum=10 * 1024 * 1024)
HOMELAB_CONNECT_TIMEOUT = env_int("HOMELAB_CONNECT_TIMEOUT", 10, minimum=1, maximum=300)
HOMELAB_SSH_IDLE_SECONDS = env_int("HOMELAB_SSH_IDLE_SECONDS", 300, minimum=1)
# Pooled SSH connections per server, each running up to 8 commands at once (sshd's
# MaxSessions is 10). 7 holds 56 commands at once on one server, so 50 run in one wave
# (issue 20, goal 4); connections open only as the load needs them, under sshd's
# MaxStartups 10, and close after HOMELAB_SSH_IDLE_SECONDS. Lower it for a small server
# that should never see more than a few sshd sessions (docs/performance.md).
HOMELAB_SSH_MAX_CONNECTIONS = env_int("HOMELAB_SSH_MAX_CONNECTIONS", 7, minimum=1, maximum=64)
# Default age, in days, past which `pruneexecutions` deletes audit rows.
HOMELAB_AUDIT_RETENTION_DAYS = env_int("HOMELAB_AUDIT_RETENTION_DAYS", 90, minimum=1)
# Live executions: one bounded runner per process (see commands/engine/runner.py).
HOMELAB_MAX_RUNNING = env_int("HOMELAB_MAX_RUNNING", 64, minimum=1, maximum=4096)
HOMELAB_BUSY_WAIT_SECONDS = env_int("HOMELAB_BUSY_WAIT_SECONDS", 2, minimum=0, maximum=60)
HOMELAB_DRAIN_SECONDS = env_int("HOMELAB_DRAIN_SECONDS", 0, minimum=0, maximum=3600)
HOMELAB_STREAM_LIMIT = env_int(
    "HOMELAB_STREAM_LIMIT", 1024 * 1024, minimum=1, maximum=1024 * 1024 * 1024
)
HOMELAB_STREAM_RETENTION_SECONDS = env_int(
    "HOMELAB_STREAM_RETENTION_SECONDS", 120, minimum=1, maximum=7 * 24 * 3600
)
# POST .../commands/execute from a script (an API key, JSON, no browser) answered without
# Django's request machinery, by the same pipeline (commands/api/fastpath.py); 0: off.
HOMELAB_FAST_EXECUTE = env_bool("HOMELAB_FAST_EXECUTE", True)
# How long the end of a command is retried when the database does not take it (a restart,
# a failover), the result held in memory meanwhile; past it the waiting caller gets 503
# `unavailable` with the result (commands/engine/record.py). 0: one attempt only.
HOMELAB_RECORD_RETRY_SECONDS = env_int("HOMELAB_RECORD_RETRY_SECONDS", 30, minimum=0, maximum=3600)
# Fleet: the most servers one batch may target (docs/fleet.md).
HOMELAB_BATCH_MAX_SERVERS = env_int("HOMELAB_BATCH_MAX_SERVERS", 100, minimum=1, maximum=10000)

# --- observability (docs/observability.md) -------------------------------------------
# GET /metrics and the counters behind it; 0 turns both off (the log lines stay).
HOMELAB_METRICS = env_bool("HOMELAB_METRICS", True)
# Several workers on one host: an empty directory they share, so that a scrape of any of
# them reports the whole service (prometheus-client's multiprocess mode). prometheus-client
# reads the variable itself; it is checked here so a typo stops start-up.
PROMETHEUS_MULTIPROC_DIR = env_directory("PROMETHEUS_MULTIPROC_DIR")
# `json`: one JSON object per log line (ts, level, logger, message, execution_id, ...).
HOMELAB_LOG_FORMAT = env_choice("HOMELAB_LOG_FORMAT", "text", ("text", "json"))

# --- browsers and proxies in front (docs/deployment.md) ------------------------------
# A browser app on another origin (e.g. a Vite dev server at http://localhost:5173) may
# call the API when its origin is listed. Keys travel in headers, never cookies: no
# credentials, so such a page can never ride on an admin's session.
CORS_ALLOWED_ORIGINS = env_origins("HOMELAB_CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_METHODS = ("GET", "POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "x-api-key")
CORS_ALLOW_CREDENTIALS = False
# Read by a browser app: where a started execution is, when to retry, what quota is left.
CORS_EXPOSE_HEADERS = (
    "Retry-After",
    "Location",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)

CSRF_TRUSTED_ORIGINS = env_origins("DJANGO_CSRF_TRUSTED_ORIGINS", wildcard_subdomains=True)
SESSION_COOKIE_HTTPONLY = True
SILENCED_SYSTEM_CHECKS: list[str] = []
HOMELAB_BEHIND_TLS_PROXY = env_bool("HOMELAB_BEHIND_TLS_PROXY", False)
if HOMELAB_BEHIND_TLS_PROXY:
    # Trusting X-Forwarded-Proto is safe only because the proxy always sets it itself (the
    # nginx snippet overwrites it) and daphne listens on loopback, reachable via the proxy.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    CSRF_COOKIE_HTTPONLY = True  # the admin reads the token from its forms, never the cookie
    # No SECURE_SSL_REDIRECT: the proxy owns port 80 and redirects it to https. Django's
    # redirect would only hit the plain-HTTP loopback calls (health checks, scripts on the
    # host) that never pass through the proxy.
    SILENCED_SYSTEM_CHECKS.append("security.W008")
SECURE_HSTS_SECONDS = env_int("HOMELAB_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HOMELAB_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("HOMELAB_HSTS_PRELOAD", False)
# Peers whose X-Forwarded-For is believed for the audit row's client address
# (commands/api/clientip.py); never for the quota, which is per API key.
HOMELAB_TRUSTED_PROXIES = env_networks("HOMELAB_TRUSTED_PROXIES")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "commands.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["commands.api.permissions.IsApiKeyOrStaff"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "commands.api.filters.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "commands.api.handlers.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"command-execute": HOMELAB_EXECUTE_RATE},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "homelab API",
    "DESCRIPTION": (
        "Run whitelisted commands on your own servers over SSH and get the result "
        "back in the same HTTP call."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Three models have a status: name each enum after its model, not a hash.
    "ENUM_NAME_OVERRIDES": {
        "ExecutionStatusEnum": "commands.api.schema.EXECUTION_STATUS",
        "BatchStatusEnum": "commands.api.schema.BATCH_STATUS",
        "TargetStatusEnum": "commands.api.schema.TARGET_STATUS",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "commands.api.schema.document_actions_without_slash",
        "commands.api.schema.document_common_errors",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "commands.observability.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": HOMELAB_LOG_FORMAT}},
    # An expected SSH failure (unpinned host key, refused key, sshd down) is logged once
    # as a WARNING by commands/api/handlers.py, not again as Django's "Internal Server Error".
    "filters": {
        "skip_logged_errors": {"()": "commands.observability.logfilters.SkipLoggedErrors"},
        "one_line": {"()": "commands.observability.logfilters.OneLine"},
    },
    "root": {"handlers": ["console"], "level": env_choice("DJANGO_LOG_LEVEL", "INFO", LOG_LEVELS)},
    "loggers": {
        # paramiko logs whole tracebacks at ERROR on a failed handshake; our own log lines
        # carry the error code, so keep its noise (and anything it might echo) out.
        "paramiko": {"level": "CRITICAL", "propagate": False},
        "django.request": {"filters": ["skip_logged_errors"]},
        # Django's defaults give these a handler of their own (console, with DEBUG) in its
        # own format: every line goes through ours instead, once.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "py.warnings": {"handlers": [], "propagate": True},
        # A bad Host header (a scanner, a misconfigured proxy): a 400 and one line.
        "django.security.DisallowedHost": {"filters": ["one_line"]},
    },
}
