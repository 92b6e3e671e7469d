"""What every benchmark shares: the test project's settings on a chosen database, and PostgreSQL."""

import os
import sys
from urllib.parse import urlsplit


def database_name(url, purpose):
    """The database's name; a benchmark refuses any database not named for it."""
    path = urlsplit(url).path.lstrip("/")
    name = os.path.basename(path) if url.startswith("sqlite") else path
    if "bench" not in name:
        sys.exit(
            f"Refusing to use database {name!r}: the benchmark {purpose}, "
            "so its name must contain 'bench'."
        )
    return name


def is_postgres(url):
    return url.startswith(("postgres://", "postgresql://", "pgsql://"))


def create_postgres_database(url, name):
    """Create the database unless it exists; True when this call created it."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def drop_postgres_database(url, name):
    import psycopg
    from django.db import connections
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    connections.close_all()
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def setup_django(url, run_dir):
    """The test project's settings on ``url`` (filesystem broker in ``run_dir``), migrated."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["DATABASE_URL"] = url
    os.environ["TIKTOK_TEST_RUN_DIR"] = run_dir
    os.environ.pop("TIKTOK_TEST_DB_NAME", None)  # would point the settings at another database
    os.environ.pop("CELERY_BROKER_URL", None)  # a publish must land in the temporary folder
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def child_environment(database_url, run_dir, api_url, broker_url, **extra):
    """What server, worker and beat processes need to share a run's database, sandbox, broker."""
    env = dict(os.environ)
    env.pop("TIKTOK_TEST_DB_NAME", None)  # would point the settings at another database
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url,
        TIKTOK_TEST_RUN_DIR=run_dir,
        TIKTOK_API_URL=api_url,
        CELERY_BROKER_URL=broker_url,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def flush_broker(redis_url):
    """Empty the Redis database a run uses as its broker."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def make_orders(prefix, count):
    """Unpaid orders of the test shop (one line each) for ``count`` pay requests; not timed."""
    from decimal import Decimal

    from django.db import transaction

    from tests.shop.models import Order, OrderLine

    numbers = [f"{prefix}-{index:05d}" for index in range(count)]
    with transaction.atomic():
        orders = Order.objects.bulk_create(
            Order(
                number=number,
                email=f"buyer{index}@example.com",
                phone="+1 202 555 0143",
                country="US",
                currency="USD",
                total=Decimal("89.99"),
                customer_id=f"C-{index}",
            )
            for index, number in enumerate(numbers)
        )
        if not all(order.pk for order in orders):  # backends that return no ids on bulk insert
            orders = list(Order.objects.filter(number__in=numbers))
        OrderLine.objects.bulk_create(
            OrderLine(order=order, sku="SKU-123", name="Mug", quantity=1, price=order.total)
            for order in orders
        )
    return numbers
