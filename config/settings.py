"""Switchboard settings: every value comes from an environment variable, with a default.

With nothing set, Switchboard runs on SQLite and a private Redis in var/. Setting
DATABASE_URL and REDIS_URL switches to the distributed set-up; there is no second code path.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet

from config.env import env_bool, env_int, env_list, env_str, new_django_secret, secret_from_file

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SWITCHBOARD_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# ---------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or secret_from_file(VAR_DIR / "secret_key", new_django_secret)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
USE_X_FORWARDED_HOST = env_bool("USE_X_FORWARDED_HOST", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SITE_URL.startswith("https://")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "anymail",
    "config",
    "departments",
    "agents",
    "inboxes",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

# ---------------------------------------------------------------------------
# Database: SQLite in var/ unless DATABASE_URL is set
# ---------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'switchboard.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; the timeout rides out short locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # psycopg prepares a statement once it ran this many times on a connection. Django's queries
    # bind values on the client and are never prepared; only the hot statements of
    # conversations.rows bind on the server and are. Off (None) for PgBouncer in transaction
    # mode before 1.21, which cannot keep prepared statements.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        5 if env_bool("DATABASE_PREPARED_STATEMENTS", True) else None)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------------------
# Redis: Celery broker and results, the Channels layer, per-inbox locks.
# Unset REDIS_URL means a private server on a Unix socket in var/ (config.embedded_redis).
# ---------------------------------------------------------------------------
REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_EMBEDDED = not env_str("REDIS_URL")
REDIS_URL = env_str("REDIS_URL") or f"unix://{REDIS_SOCKET}?db=0"
_CELERY_REDIS_URL = f"redis+socket://{REDIS_SOCKET}" if REDIS_EMBEDDED else REDIS_URL

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "switchboard:channels"},
    }
}

# ---------------------------------------------------------------------------
# Celery
# ---------------------------------------------------------------------------
CELERY_BROKER_URL = _CELERY_REDIS_URL
CELERY_RESULT_BACKEND = _CELERY_REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# acks_late redelivers a task whose worker died, after the visibility timeout.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_KB", 512_000)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # Enqueues a poll for each active inbox whose interval has elapsed.
    "poll-due-inboxes": {"task": "conversations.poll_due_inboxes", "schedule": env_int("POLL_TICK_SECONDS", 10)},
    # Sends queued replies whose time has come and requeues those a crashed worker left behind.
    "sweep-deliveries": {"task": "conversations.sweep_deliveries", "schedule": env_int("SWEEP_TICK_SECONDS", 30)},
}

# ---------------------------------------------------------------------------
# Secrets at rest. FIELD_ENCRYPTION_KEYS: comma-separated Fernet keys, newest first.
# Unset: one key generated once into var/. The key never lives in the database.
# ---------------------------------------------------------------------------
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS") or [
    secret_from_file(VAR_DIR / "field_encryption_key", lambda: Fernet.generate_key().decode())
]

# ---------------------------------------------------------------------------
# Files: raw messages and attachments go through Django's storage API.
# ---------------------------------------------------------------------------
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media"))).resolve()
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "config.storage.MediaStorage"},  # FileSystemStorage, quicker for ingest
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# ---------------------------------------------------------------------------
# Mail
# ---------------------------------------------------------------------------
# Domain of the Message-IDs we generate; defaults to each inbox's own domain.
SWITCHBOARD_MESSAGE_ID_DOMAIN = env_str("MESSAGE_ID_DOMAIN")
MAX_MESSAGE_BYTES = env_int("MAX_MESSAGE_BYTES", 50 * 1024 * 1024)
IMAP_TIMEOUT = env_int("IMAP_TIMEOUT", 30)
# Extra CA certificates (a PEM file) trusted for mail servers, on top of the system store.
MAIL_CA_FILE = env_str("MAIL_CA_FILE")
# Polling: messages and bytes fetched per IMAP round trip, and the time one poll may take
# before it stops and leaves the rest (the backlog) to the next poll.
POLL_BATCH_SIZE = env_int("POLL_BATCH_SIZE", 50)
POLL_BATCH_BYTES = env_int("POLL_BATCH_BYTES", 32 * 1024 * 1024)
# Parse incoming mail in a helper process per worker process (conversations.parse_pool).
INGEST_PARSE_PROCESS = env_bool("INGEST_PARSE_PROCESS", True)
POLL_TIME_BUDGET_SECONDS = env_int("POLL_TIME_BUDGET_SECONDS", 120)
# The per-inbox lock outlives the longest poll (the task's hard time limit) by a margin.
POLL_LOCK_SECONDS = env_int("POLL_LOCK_SECONDS", CELERY_TASK_TIME_LIMIT + 60)
POLL_BACKOFF_MAX_SECONDS = env_int("POLL_BACKOFF_MAX_SECONDS", 3600)
SMTP_TIMEOUT = env_int("SMTP_TIMEOUT", 60)
REOPEN_WINDOW_DAYS = env_int("REOPEN_WINDOW_DAYS", 14)
DELIVERY_GIVE_UP_SECONDS = env_int("DELIVERY_GIVE_UP_SECONDS", 24 * 3600)
# Outgoing retries back off exponentially from this many seconds (with jitter), capped at an hour.
DELIVERY_RETRY_BASE_SECONDS = env_int("DELIVERY_RETRY_BASE_SECONDS", 30)
# A delivery task goes on with its inbox's other queued replies over the same connection, up to
# this many messages or seconds (well inside the task time limit), then leaves the rest to the next task.
DELIVERY_DRAIN_MAX_MESSAGES = env_int("DELIVERY_DRAIN_MAX_MESSAGES", 200)
DELIVERY_DRAIN_MAX_SECONDS = env_int("DELIVERY_DRAIN_MAX_SECONDS", 30)
# A CA file (PEM) the SMTP transport trusts besides the system store, e.g. a private mail server's CA.
SMTP_CA_FILE = env_str("SMTP_CA_FILE")
# Anymail ESP settings, when an inbox sends through an email service (see README).
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): value
    for key, value in __import__("os").environ.items()
    if key.startswith("ANYMAIL_")
}

# ---------------------------------------------------------------------------
# Auth, API, i18n, logging
# ---------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
