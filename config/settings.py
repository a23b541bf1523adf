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
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind https, browsers are told to come back only over https (a year, subdomains too).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if SITE_URL.startswith("https://") else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Nothing the console loads comes from elsewhere; customers' HTML is shown in a sandboxed
# frame whose own policy is stricter still (see templates/console/). Remote images in
# customers' mail load only when an agent asks, hence img-src https: and http:. The frame's
# srcdoc inherits this policy, so style attributes (the sanitizer keeps a short list of CSS
# properties in them, and drops <style> elements) are allowed, or customers' mail would lose
# its colours and layout; style sheets stay 'self' only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:", "https:", "http:"],
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    },
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "django_htmx",
    "channels",
    "anymail",
    "config",
    "departments",
    "agents",
    "inboxes",
    "conversations",
    "conversations.api",
    "conversations.console",
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
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its own answer.
    "axes.middleware.AxesMiddleware",
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
    # core.rows bind on the server and are. Off (None) for PgBouncer in transaction
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

# The channel layer is Redis pub/sub: a web process subscribes once to each group its sockets
# joined and hands each event to them itself, so an event costs one Redis message per web
# process, not one per socket (the list-based RedisChannelLayer popped 500 messages one by one
# for 500 sockets). Pub/sub keeps nothing for a process that is reconnecting; the sockets notice
# the numbers they skipped and catch up from the replay log (conversations/live/consumers.py).
# redis-py 8.1's default 5 s socket_timeout once closed idle sockets (it equalled the list
# layer's blocking pop); reads may wait longer, a Redis gone silent is still noticed within
# 30 s, and a connection idle past 30 s is pinged first.
_CHANNEL_REDIS = {"socket_timeout": 30, "socket_connect_timeout": 5, "health_check_interval": 30}
if not REDIS_URL.startswith("unix://"):
    _CHANNEL_REDIS["socket_keepalive"] = True  # TCP only; a Unix socket connection refuses it
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, **_CHANNEL_REDIS}], "prefix": "switchboard:channels"},
    }
}

# Live: an agent is offline this long after their last console socket closes (a reload is
# not a departure); a socket counts this long past its last heartbeat (a web process that
# dies takes its sockets' presence with it); open sockets recheck their permissions this often.
PRESENCE_GRACE_SECONDS = env_int("PRESENCE_GRACE_SECONDS", 60)
PRESENCE_SOCKET_TTL_SECONDS = env_int("PRESENCE_SOCKET_TTL_SECONDS", 15)
LIVE_RECHECK_SECONDS = env_int("LIVE_RECHECK_SECONDS", 2)
# The replay log: the last events of each department a reconnecting client may catch up on.
EVENT_REPLAY_LENGTH = env_int("EVENT_REPLAY_LENGTH", 1000)
EVENT_REPLAY_SECONDS = env_int("EVENT_REPLAY_SECONDS", 3600)

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
# How often beat looks for inboxes due for a poll. An inbox is due once its interval will have
# passed by the next look: a poll starts at most one tick early, never a tick late.
POLL_TICK_SECONDS = env_int("POLL_TICK_SECONDS", 10)
CELERY_BEAT_SCHEDULE = {
    # Enqueues a poll for each active inbox whose interval has elapsed.
    "poll-due-inboxes": {"task": "conversations.poll_due_inboxes", "schedule": POLL_TICK_SECONDS},
    # Sends queued replies whose time has come and requeues those a crashed worker left behind.
    "sweep-deliveries": {"task": "conversations.sweep_deliveries", "schedule": env_int("SWEEP_TICK_SECONDS", 30)},
    # Saves again the Sent-folder copies of sent replies whose APPEND failed (never sends them again).
    "retry-sent-copies": {"task": "conversations.retry_sent_copies",
                          "schedule": env_int("SENT_COPY_TICK_SECONDS", 60)},
    # Assigns queued conversations whose chance was missed, reconciles presence, returns offline agents' work.
    "sweep-routing": {"task": "conversations.sweep_routing", "schedule": env_int("ROUTING_SWEEP_SECONDS", 30)},
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
    "default": {"BACKEND": "core.storage.MediaStorage"},  # FileSystemStorage, quicker for ingest
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
# Extra CA certificates (a PEM file) trusted for mail servers, IMAP and SMTP, on top of the
# system store. A single server's own certificate is better trusted per inbox (Test connection).
MAIL_CA_FILE = env_str("MAIL_CA_FILE")
# Polling: messages and bytes fetched per IMAP round trip, and the time one poll may take
# before it stops and leaves the rest (the backlog) to the next poll.
POLL_BATCH_SIZE = env_int("POLL_BATCH_SIZE", 50)
POLL_BATCH_BYTES = env_int("POLL_BATCH_BYTES", 32 * 1024 * 1024)
# Parse incoming mail in a helper process per worker process (inboxes.mailformat.parse_pool).
INGEST_PARSE_PROCESS = env_bool("INGEST_PARSE_PROCESS", True)
POLL_TIME_BUDGET_SECONDS = env_int("POLL_TIME_BUDGET_SECONDS", 120)
# The per-inbox lock lasts this long and a running poll renews it every third of it, so a
# killed worker blocks its inbox for at most this long.
POLL_LOCK_SECONDS = env_int("POLL_LOCK_SECONDS", 60)
# Failed polls back off from the poll interval, doubling up to the maximum; a server that says
# it is throttling us (its limits) from at least this many seconds.
POLL_BACKOFF_MAX_SECONDS = env_int("POLL_BACKOFF_MAX_SECONDS", 3600)
POLL_THROTTLE_BACKOFF_SECONDS = env_int("POLL_THROTTLE_BACKOFF_SECONDS", 120)
SMTP_TIMEOUT = env_int("SMTP_TIMEOUT", 60)
# Test connection (admin, API, test_inbox) logs in to the mail servers: at most this many runs per inbox a minute.
CONNECTION_TESTS_PER_MINUTE = env_int("CONNECTION_TESTS_PER_MINUTE", 6)
REOPEN_WINDOW_DAYS = env_int("REOPEN_WINDOW_DAYS", 14)
# The loop guard's last cap, which holds when every header lies: automatic messages
# (acknowledgements, AI replies) one inbox sends per hour at most (conversations.outgoing.loopguard).
AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR = env_int("AUTOMATIC_REPLIES_PER_INBOX_PER_HOUR", 50)
DELIVERY_GIVE_UP_SECONDS = env_int("DELIVERY_GIVE_UP_SECONDS", 24 * 3600)
# Outgoing retries back off exponentially from this many seconds (with jitter), capped at an hour.
DELIVERY_RETRY_BASE_SECONDS = env_int("DELIVERY_RETRY_BASE_SECONDS", 30)
# A failed save of a reply's copy to the Sent folder is tried again from this many seconds,
# doubling (with jitter, capped at 6 hours), at most this many times in all.
SENT_COPY_RETRY_BASE_SECONDS = env_int("SENT_COPY_RETRY_BASE_SECONDS", 60)
SENT_COPY_MAX_ATTEMPTS = env_int("SENT_COPY_MAX_ATTEMPTS", 10)
# A delivery task goes on with its inbox's other queued replies over the same connection, up to
# this many messages or seconds (well inside the task time limit), then leaves the rest to the next task.
DELIVERY_DRAIN_MAX_MESSAGES = env_int("DELIVERY_DRAIN_MAX_MESSAGES", 200)
DELIVERY_DRAIN_MAX_SECONDS = env_int("DELIVERY_DRAIN_MAX_SECONDS", 30)
# The old name of MAIL_CA_FILE for outgoing mail: still trusted (by both transports) while set.
SMTP_CA_FILE = env_str("SMTP_CA_FILE")
# Switchboard's own mail to its users (password resets), not an inbox's: through this SMTP
# server when EMAIL_HOST is set; otherwise written to the web process's log.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", EMAIL_PORT == 587)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", EMAIL_PORT == 465)
EMAIL_BACKEND = ("django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST
                 else "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "switchboard@localhost")
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
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
AUTHENTICATION_BACKENDS = [
    # First: refuses a sign-in while its account or address is locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Repeated failed sign-ins: after this many for one account, or from one address, that account
# or address waits AXES_COOLOFF_MINUTES. Counted in the database, so every web process agrees.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("LOGIN_COOLOFF_MINUTES", 15) / 60
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_IPWARE_PROXY_COUNT = env_int("PROXY_COUNT", 0)
AXES_VERBOSE = False
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "conversations.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "conversations.api.pagination.Cursor",
    "DEFAULT_THROTTLE_CLASSES": ["conversations.api.throttling.PerCallerThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "conversations.api.errors.exception_handler",
    "PAGE_SIZE": 50,
}
# Requests per minute for one API token, or one user's session (a token has its own allowance).
API_THROTTLE_PER_MINUTE = env_int("API_THROTTLE_PER_MINUTE", 1200)
# An upload waiting to be attached to a reply may be at most this large.
API_UPLOAD_MAX_BYTES = env_int("API_UPLOAD_MAX_BYTES", 25 * 1024 * 1024)
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchboard API",
    "DESCRIPTION": "Everything an agent, a manager or a bot does. Agents see their departments' "
                   "conversations only: anything else is 404.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # the docs' assets come from this server: they work offline
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SecurityEnum": "inboxes.models.Security",
        "AgentKindEnum": "agents.models.AgentKind",
        "MessageKindEnum": "conversations.models.MessageKind",
        "ConversationStatusEnum": "conversations.models.ConversationStatus",
        "QuarantineStatusEnum": "conversations.models.QuarantineStatus",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "conversations.api.schema.add_errors"],
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
