"""Test settings: SQLite and the server-less broker unless the environment names others."""

import json
import os
import tempfile
from pathlib import Path

import django
import environ

from tiktok_tracking.partitions import POSTGRES_OPTIONS

env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent.parent
# One scratch folder per test session, shared with the worker processes the tests start.
RUN_DIR = Path(env.str("TIKTOK_TEST_RUN_DIR", default=tempfile.mkdtemp(prefix="tiktok-tests-")))
os.environ.setdefault("TIKTOK_TEST_RUN_DIR", str(RUN_DIR))

SECRET_KEY = "tests-only-secret-key"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Several pixels may each track their own sites.
    "django.contrib.sites",
    "django_celery_beat",
    "tiktok_tracking",
    "tests.shop",
    # The django-payments integration, tested against the real package.
    "payments",
    "tiktok_tracking.integrations.payments",
    "tests.payments_shop",
]

# django-payments builds provider return URLs from this host; its dummy provider calls nothing.
PAYMENT_HOST = "shop.example"
PAYMENT_USES_SSL = False
PAYMENT_MODEL = "payments_shop.OrderPayment"
PAYMENT_VARIANTS = {"default": ("payments.dummy.DummyProvider", {})}

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "tiktok_tracking.middleware.TikTokTrackingMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# SQLite by default, in a file so that worker processes share the test database.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{RUN_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(RUN_DIR / "test-db.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
# On PostgreSQL, the connection parameters docs/deployment.md recommends ("Network partitions",
# system check W010), so that a process whose link is cut notices within the lease;
# TIKTOK_TEST_KERNEL_TCP_DEFAULTS=1 leaves them out (tests/faults/test_partition.py measures both).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and not env.bool(
    "TIKTOK_TEST_KERNEL_TCP_DEFAULTS", default=False
):
    for key, value in POSTGRES_OPTIONS.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(key, value)
# Behind a pooler in transaction mode (PgBouncer), each transaction may get another server
# connection: no server-side cursor may outlive one (Django's docs, "Transaction pooling and
# server-side cursors").
if env.bool("TIKTOK_TEST_TRANSACTION_POOLER", default=False):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
# A streaming replica of the PostgreSQL cluster (tests/test_replica.py; .ci/run's second pass
# makes one). As a test mirror, it reads the test database the primary's replication brings it.
# The router only answers inside the app's reports, and only where REPLICA_DATABASE is set.
if env.str("TIKTOK_TEST_REPLICA_URL", default=""):
    DATABASES["replica"] = {
        **env.db_url_config(env.str("TIKTOK_TEST_REPLICA_URL")),
        "TEST": {"MIRROR": "default"},
    }
    DATABASE_ROUTERS = ["tiktok_tracking.replica.ReplicaRouter"]
# A worker process started by the tests is pointed at the test database by name.
if env.str("TIKTOK_TEST_DB_NAME", default=""):
    DATABASES["default"]["NAME"] = env.str("TIKTOK_TEST_DB_NAME")

# Celery: the server-less filesystem broker unless CELERY_BROKER_URL names a real one.
BROKER_DIR = RUN_DIR / "broker"
BROKER_DIR.mkdir(parents=True, exist_ok=True)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
# The app's filesystem transport, which never shows a consumer a half-written file.
CELERY_BROKER_TRANSPORT = (
    "tiktok_tracking.broker:FilesystemTransport"
    if CELERY_BROKER_URL.startswith("filesystem")
    else None
)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        # Else the transport writes its broadcast exchanges into the working directory.
        "control_folder": str(BROKER_DIR / "control"),
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"socket_timeout": 5, "socket_connect_timeout": 2}
)
# The broker's transport options of a fault scenario's worker, as JSON, in place of the above
# (tests/faults/test_partition.py measures kombu's defaults against docs/deployment.md's).
if env.str("TIKTOK_TEST_BROKER_OPTIONS", default=""):
    CELERY_BROKER_TRANSPORT_OPTIONS = json.loads(env.str("TIKTOK_TEST_BROKER_OPTIONS"))
# RabbitMQ's quorum queues (docs/deployment.md), for CI's RabbitMQ pass: a queue of their own,
# as RabbitMQ refuses to declare the classic queue "celery" again as another type.
if env.str("TIKTOK_TEST_QUEUE_TYPE", default="classic") == "quorum":
    CELERY_TASK_DEFAULT_QUEUE = "tiktok-tests-quorum"
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    # A countdown goes through RabbitMQ's native delayed delivery only from a topic exchange
    # (named for its type: RabbitMQ will not declare an exchange again as another type).
    CELERY_TASK_DEFAULT_EXCHANGE = "tiktok-tests-quorum-topic"
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_BROKER_TRANSPORT_OPTIONS["confirm_publish"] = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

TIKTOK_TRACKING = {
    "PIXEL_ID": "CTESTPIXEL0001",
    "ACCESS_TOKEN": env.str("TIKTOK_ACCESS_TOKEN", default="test-access-token-0123456789"),
    "API_URL": env.str("TIKTOK_API_URL", default="http://127.0.0.1:9/open_api/v1.3/event/track/"),
    "ORDER_ADAPTER": "tests.shop.adapters.ShopOrderAdapter",
    # Nothing listens there: offline, events.js never loads and window.ttq stays a queue.
    "PIXEL_SCRIPT_URL": "http://127.0.0.1:9/events.js",
    # Short delays so that retries and leases play out within a test.
    "TIMEOUT": 2.0,
    "RETRY_BASE_DELAY": 0.5,
    "RETRY_MAX_DELAY": 2.0,
    "LEASE_SECONDS": 6,
    # The delivery benchmark drains for longer.
    "DRAIN_SECONDS": env.int("TIKTOK_DRAIN_SECONDS", default=5),
    "SWEEP_INTERVAL": 1,
    # The test shop's country switch: a cookie, as a shop behind no geo-IP edge might do it.
    "COUNTRY_RESOLVER": "tests.shop.views.country_from_cookie",
    # One event per order keeps the delivery tests about the purchase; the funnel event has
    # tests of its own.
    "SERVER_FUNNEL_EVENTS": (),
    # What tiktok_reconcile compares the outbox with.
    "PAID_ORDERS": "tests.shop.reports.paid_orders",
}
# The delivery benchmark compares batch sizes; unset, the app's default applies (and is tested).
if env.str("TIKTOK_BATCH_SIZE", default=""):
    TIKTOK_TRACKING["BATCH_SIZE"] = env.int("TIKTOK_BATCH_SIZE")

# Django 6.0 takes the admins as bare addresses and deprecates (name, address) pairs; 6.1
# sends mail through MAILERS, deprecates EMAIL_BACKEND and warns when no mailer is named. Each
# version is configured the way it asks, so that the suite runs free of those warnings.
WITH_MAILERS = django.VERSION >= (6, 1)


def admins(address):
    """ADMINS naming ``address``, in the form this Django takes (tests override it with it)."""
    return [address] if django.VERSION >= (6, 0) else [("Shop admin", address)]


# Where a worker started by tests/test_readiness_beat.py sends readiness alerts: the admins'
# address, mail written as files the test reads, the test's own webhook endpoint and secret.
# Unset, as for every other test, the defaults stand.
if env.str("TIKTOK_TEST_ADMIN_EMAIL", default=""):
    ADMINS = admins(env.str("TIKTOK_TEST_ADMIN_EMAIL"))
EMAIL_DIR = env.str("TIKTOK_TEST_EMAIL_DIR", default="")
if WITH_MAILERS:
    MAILERS = {
        "default": (
            {
                "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "OPTIONS": {"file_path": EMAIL_DIR},
            }
            if EMAIL_DIR
            else {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
        )
    }
elif EMAIL_DIR:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = EMAIL_DIR
if env.str("TIKTOK_TEST_ALERT_WEBHOOK_URL", default=""):
    TIKTOK_TRACKING["READINESS"] = {
        "ALERT_WEBHOOK_URL": env.str("TIKTOK_TEST_ALERT_WEBHOOK_URL"),
        "ALERT_WEBHOOK_SECRET": env.str("TIKTOK_TEST_ALERT_WEBHOOK_SECRET", default=""),
    }
# Further READINESS keys for the workers of tests/faults/test_two_beats.py, as JSON.
if env.str("TIKTOK_TEST_READINESS", default=""):
    TIKTOK_TRACKING["READINESS"] = {
        **TIKTOK_TRACKING.get("READINESS", {}),
        **json.loads(env.str("TIKTOK_TEST_READINESS")),
    }
# Further top-level TIKTOK_TRACKING keys for the workers and beat of a fault scenario, as JSON
# (tests/faults/test_recording_faults.py runs the scan of paid orders every second).
if env.str("TIKTOK_TEST_TRACKING", default=""):
    TIKTOK_TRACKING.update(json.loads(env.str("TIKTOK_TEST_TRACKING")))
