"""Demo shop settings: all from the environment or ``.env``; defaults use the local sandbox."""

from pathlib import Path

import django
import environ

from tiktok_tracking.partitions import POSTGRES_OPTIONS

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
# A developer's own .env wins over the defaults below; the real environment wins over both.
environ.Env.read_env(BASE_DIR / ".env")

# The default database and the filesystem broker live here (another folder isolates a run).
VAR_DIR = Path(env.str("DEMO_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env.str("SECRET_KEY", default="demo-only-secret-key-change-me-0123456789abcdef")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo_shop.urls"
WSGI_APPLICATION = "demo_shop.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"

DEMO_PORT = env.int("DEMO_PORT", default=8000)
SANDBOX_PORT = env.int("SANDBOX_PORT", default=8765)
# Where the fake payment gateway delivers its webhook: the shop as the outside world reaches it.
DEMO_SITE_URL = env.str("DEMO_SITE_URL", default=f"http://127.0.0.1:{DEMO_PORT}")
SANDBOX_PAGE_URL = env.str("SANDBOX_PAGE_URL", default=f"http://127.0.0.1:{SANDBOX_PORT}/sandbox/")
# Shared by the gateway and the shop to sign webhooks, as a real provider's signing secret is.
GATEWAY_WEBHOOK_SECRET = env.str("GATEWAY_WEBHOOK_SECRET", default=f"{SECRET_KEY}:gateway")
# Real gateways confirm a few seconds after the shopper is back; DEMO_EAGER runs it at once.
DEMO_EAGER = env.bool("DEMO_EAGER", default=False)
GATEWAY_WEBHOOK_COUNTDOWN = 0 if DEMO_EAGER else env.int("GATEWAY_WEBHOOK_COUNTDOWN", default=3)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "tiktok_tracking",
    "demo_shop.store",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tiktok_tracking.middleware.TikTokTrackingMiddleware",
]

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
                "demo_shop.store.views.shop_context",
            ]
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'demo.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat write to the same file: a writer waits up to
    # `timeout` seconds for another's lock (SQLite's busy timeout) instead of failing at once.
    sqlite_options = DATABASES["default"].setdefault("OPTIONS", {})
    sqlite_options["timeout"] = 30
    if django.VERSION >= (5, 1):
        # WAL lets readers go on while one process writes. IMMEDIATE takes the write lock as a
        # transaction begins, where the busy timeout applies; a transaction that reads first
        # and writes later is not always let wait: SQLite answers "database is locked" at once
        # when another process wrote in between. With WAL, synchronous=NORMAL cannot corrupt
        # the file (a power cut may lose the last commits) and spares a sync on every commit.
        sqlite_options["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
        sqlite_options["transaction_mode"] = "IMMEDIATE"
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A worker whose link to PostgreSQL is cut notices within seconds, not the kernel's
    # minutes, and its rows come back within their lease (docs/deployment.md, "Network
    # partitions"; system check W010).
    postgres_options = DATABASES["default"].setdefault("OPTIONS", {})
    for key, value in POSTGRES_OPTIONS.items():
        postgres_options.setdefault(key, value)

# Celery: the server-less filesystem broker unless CELERY_BROKER_URL names a real one.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem"):
    (BROKER_DIR / "control").mkdir(parents=True, exist_ok=True)
    # The app's filesystem transport: kombu's own lets a worker read a message file before it
    # is written, and die of it.
    CELERY_BROKER_TRANSPORT = "tiktok_tracking.broker:FilesystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        # Else the transport writes its broadcast exchanges into the working directory.
        "control_folder": str(BROKER_DIR / "control"),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2}
CELERY_BROKER_CONNECTION_TIMEOUT = 2  # a broker that is down must not hold up a checkout
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = DEMO_EAGER
CELERY_TASK_EAGER_PROPAGATES = DEMO_EAGER
# DEMO_EAGER runs the delivery inside the requests on purpose (no worker): the warning that a
# payment would then wait for TikTok is known here. The demo with its worker runs without it.
SILENCED_SYSTEM_CHECKS = ["tiktok_tracking.W009"] if DEMO_EAGER else []

TIKTOK_TRACKING = {
    "PIXEL_ID": env.str("TIKTOK_PIXEL_ID", default="CDEMOPIXEL0001"),
    "ACCESS_TOKEN": env.str("TIKTOK_ACCESS_TOKEN", default="demo-sandbox-token"),
    "API_URL": env.str(
        "TIKTOK_API_URL", default=f"http://127.0.0.1:{SANDBOX_PORT}/open_api/v1.3/event/track/"
    ),
    "PIXEL_SCRIPT_URL": env.str(
        "TIKTOK_PIXEL_SCRIPT_URL", default=f"http://127.0.0.1:{SANDBOX_PORT}/i18n/pixel/events.js"
    ),
    "TEST_EVENT_CODE": env.str("TIKTOK_TEST_EVENT_CODE", default="") or None,
    "ORDER_ADAPTER": "demo_shop.store.adapters.DemoOrderAdapter",
    "COUNTRY_RESOLVER": "demo_shop.store.views.country_from_cookie",
    "SWEEP_INTERVAL": 10,
    # A batch whose worker was killed goes back to the queue within 40 s (the lease and one
    # sweep), not the default 2 min: long enough for two requests of TIMEOUT (10 s) and their
    # recording (check E009).
    "LEASE_SECONDS": 30,
    # What manage.py tiktok_reconcile compares the outbox with.
    "PAID_ORDERS": "demo_shop.store.models.paid_orders",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"routine_tasks": {"()": "demo_shop.logs.RoutineTaskLines"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "tiktok_tracking": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "demo_shop": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Three lines every 10 s for the outbox sweep alone would bury the lines that matter.
        # Level and handlers stay Celery's own (-l INFO): only the filter is added.
        "celery.beat": {"filters": ["routine_tasks"]},
        "celery.worker.strategy": {"filters": ["routine_tasks"]},
        "celery.app.trace": {"filters": ["routine_tasks"]},
    },
}
