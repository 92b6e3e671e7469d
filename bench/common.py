"""What every benchmark shares: the test project's settings on a chosen database, and PostgreSQL."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tests.processes import terminate

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# A percentile is printed only when at least this many samples lie beyond it, so that it is not
# the luck of one or two samples: a p95 needs 400 samples, a p99 2,000.
TAIL_SAMPLES = 20
P95_MIN_SAMPLES = TAIL_SAMPLES * 20
P99_MIN_SAMPLES = TAIL_SAMPLES * 100
# What a table prints where a figure was not computed.
NO_FIGURE = "—"


def spread(samples):
    """Sample count, median, p95 and p99 of ``samples``; a percentile with fewer than
    ``TAIL_SAMPLES`` samples beyond it is None (printed as NO_FIGURE)."""
    count = len(samples)
    result = {"n": count, "median": statistics.median(samples), "p95": None, "p99": None}
    if count >= P95_MIN_SAMPLES:
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        result["p95"] = cuts[94]
        if count >= P99_MIN_SAMPLES:
            result["p99"] = cuts[98]
    return result


def share(total, parts, index):
    """Part ``index`` of ``total`` cut into ``parts`` near-equal parts that add up to it."""
    return total * (index + 1) // parts - total * index // parts


def difference(first, second):
    """``first - second``, or None when either was not computed."""
    return None if first is None or second is None else first - second


def cell(value, width, spec=".2f"):
    """``value`` formatted with ``spec`` and right-aligned in ``width``; NO_FIGURE for None."""
    return (NO_FIGURE if value is None else format(value, spec)).rjust(width)


def percentile_note(counts, unit="samples"):
    """Why a table shows NO_FIGURE for some percentiles, or None when it shows none."""
    fewest = min(counts)
    if fewest >= P99_MIN_SAMPLES:
        return None
    return (
        f"{NO_FIGURE}: not computed from so few {unit} (a p95 needs {P95_MIN_SAMPLES:,}, a p99 "
        f"{P99_MIN_SAMPLES:,}: at least {TAIL_SAMPLES} beyond the cut)"
    )


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


def run_on_postgres(url, purpose, run, *, keep, needs, run_dir_prefix):
    """``run(run_dir)`` on the PostgreSQL database ``url``: created and migrated first, dropped
    after unless ``keep``; ``needs`` says why a database that is not PostgreSQL is refused."""
    name = database_name(url, purpose)
    if not is_postgres(url):
        sys.exit(needs)
    run_dir = tempfile.mkdtemp(prefix=run_dir_prefix)
    create_postgres_database(url, name)
    try:
        setup_django(url, run_dir)
        return run(run_dir)
    finally:
        if not keep:
            drop_postgres_database(url, name)
            print(f"Dropped database {name}.")
        shutil.rmtree(run_dir, ignore_errors=True)


def cpu_seconds(pid):
    """User plus system CPU seconds of process ``pid`` so far, from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # utime and stime are the 14th and 15th fields; the command name before ")" may hold spaces.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_times():
    """``(busy, total)`` CPU ticks of the whole machine so far, every core, from /proc/stat;
    None where there is no /proc. Idle and waiting on I/O count as not busy."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return None
    ticks = [int(value) for value in line.split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    total = sum(ticks[:8])
    return total - ticks[3] - ticks[4], total


def busy_share(before, after):
    """The share of the machine's CPU time that was busy between two ``machine_cpu_times()``."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


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


class SandboxProcess:
    """The TikTok sandbox in a process of its own, driven over its HTTP control endpoints.

    Kept out of the benchmark's process on purpose: the sandbox holds every request it
    records, and the garbage collector's passes over them (tens of milliseconds, growing with
    the records) would stall the load generator's threads and clocks, and only while the
    server with the app is delivering. TikTok is not in the shop's process either.
    """

    kind = "sandbox"

    def __init__(self, *, token, latency):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiktok_tracking.sandbox",
                "--port",
                "0",
                "--token",
                token,
                "--latency",
                str(latency),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # The first line is the base URL: the sandbox is listening once it is printed.
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            self.process.wait(timeout=10)
            raise RuntimeError(f"the sandbox did not start (exit {self.process.returncode})")
        from tiktok_tracking.sandbox.server import TRACK_PATH

        self.events_url = self.url + TRACK_PATH

    @property
    def pid(self):
        return self.process.pid

    def _control(self, method, action):
        # The sandbox's own http:// URL on loopback, never a user-supplied scheme.
        request = urllib.request.Request(f"{self.url}/sandbox/{action}", method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
            return json.load(answer)

    def reset(self):
        self._control("POST", "reset")

    @property
    def requests(self):
        """Every track request recorded so far (fetched anew on each read)."""
        return self._control("GET", "requests")

    def stop(self):
        terminate(self.process)
        self.process.stdout.close()
