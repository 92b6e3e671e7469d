"""Delivery: events per second from a PostgreSQL outbox through Celery workers to the sandbox."""

import argparse
import atexit
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from bench.common import (
    busy_share,
    child_environment,
    cpu_seconds,
    create_postgres_database,
    database_name,
    drop_postgres_database,
    flush_broker,
    machine_cpu_times,
    setup_django,
)

# Why the benchmark refuses databases not named for it.
PURPOSE = "truncates its tracking tables"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tiktok_bench_delivery"
# A database number of its own: the benchmark empties it before each drain.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_EVENTS = 20_000
DEFAULT_SINGLE_EVENTS = 300
DEFAULT_MEMORY_EVENTS = 100_000
DEFAULT_WORKERS = (1, 2, 4)
DEFAULT_PROFILE_EVENTS = 10_000

SANDBOX_LATENCY = 0.05
BATCH_SIZE = 1000
# Long enough for one task per worker to do a whole drain (after this long the task re-enqueues
# itself, which would only add broker round trips to the figures).
DRAIN_SECONDS = 120
POLL_INTERVAL = 0.025

TARGET_EVENTS_PER_SECOND = 10_000
TARGET_BATCH_RATIO = 200
TARGET_PEAK_MB = 150

PIXEL_ID = "CTESTPIXEL0001"
EVENT_TABLE = "tiktok_tracking_trackedevent"
ATTEMPT_TABLE = "tiktok_tracking_deliveryattempt"
ANSWER_TABLE = "tiktok_tracking_deliveryanswer"
# The worker's log line after each task; its claimed count shows how the drain was shared.
CLAIMED_LOG_LINE = re.compile(r"TikTok delivery: (\d+) claimed")
# Celery's log line after a task has run.
TASK_DONE_LOG_LINE = "succeeded in"
DELIVER_TASK = "tiktok_tracking.deliver_events"
SQL_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"(\w+)"')
SQL_STATUS_SET = re.compile(r'\bSET\s+"status"\s*=\s*%s')

# A realistic mix of buyers: countries whose consent rules let the event through, so that every
# seeded event must arrive (opt-in countries with consent granted, the US without an objection).
BUYERS = (
    ("US", "", "en-US", "USD"),
    ("US", "granted", "en-US", "USD"),
    ("DE", "granted", "de-DE", "EUR"),
    ("GB", "granted", "en-GB", "GBP"),
    ("FR", "granted", "fr-FR", "EUR"),
    ("CA", "", "en-CA", "CAD"),
)
USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 musical_ly_35.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
)
PRODUCTS = (
    ("SKU-123", "Mug", "14.90"),
    ("SKU-208", "T-shirt", "24.00"),
    ("SKU-311", "Cap", "19.50"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.delivery",
        description="Drain a PostgreSQL outbox through real Celery workers to the sandbox over "
        "HTTP: events per second, worker memory, scale-out and exactly-once delivery.",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        help=f"events per throughput and scale-out drain (default {DEFAULT_EVENTS:,})",
    )
    parser.add_argument(
        "--single-events",
        type=int,
        default=DEFAULT_SINGLE_EVENTS,
        help="events timed with BATCH_SIZE = 1, one request each "
        f"(default {DEFAULT_SINGLE_EVENTS}; 0 skips that run)",
    )
    parser.add_argument(
        "--memory-events",
        type=int,
        default=DEFAULT_MEMORY_EVENTS,
        help="events drained while watching the worker's memory "
        f"(default {DEFAULT_MEMORY_EVENTS:,}; 0 skips that run)",
    )
    parser.add_argument(
        "--workers",
        default=",".join(map(str, DEFAULT_WORKERS)),
        help="worker counts of the scale-out drains, comma-separated; the first is the "
        "baseline (default 1,2,4)",
    )
    parser.add_argument(
        "--profile-events",
        type=int,
        default=DEFAULT_PROFILE_EVENTS,
        help="events drained in-process with timers on each step (default "
        f"{DEFAULT_PROFILE_EVENTS:,}; 0 skips the breakdown)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help=f"PostgreSQL database (default $BENCH_DATABASE_URL or {DEFAULT_DATABASE_URL}); "
        "its name must contain 'bench'. Created if missing and dropped at the end if this run "
        "created it; a database that existed has its tracking tables emptied",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"Celery broker (default {DEFAULT_REDIS_URL}); that Redis database is flushed "
        "before each drain, so it must not be database 0",
    )
    parser.add_argument(
        "--same-due-time",
        action="store_true",
        help="seed every row due at the same instant (as after the sweeper expires leases) "
        "instead of one a millisecond",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the database and the rows of the last drain in place",
    )
    args = parser.parse_args(argv)
    try:
        args.workers = [int(count) for count in args.workers.split(",")]
    except ValueError:
        parser.error("--workers takes worker counts separated by commas, e.g. 1,2,4")
    if not args.workers or min(args.workers) < 1:
        parser.error("--workers needs at least one count, each at least 1")
    if args.events < BATCH_SIZE:
        parser.error(f"--events must be at least {BATCH_SIZE}")
    if min(args.single_events, args.memory_events, args.profile_events) < 0:
        parser.error("event counts cannot be negative")
    if not args.redis_url.startswith("redis://") or redis_database(args.redis_url) == 0:
        parser.error("--redis-url must be redis://host:port/<n> with n other than 0")
    return args


def redis_database(url):
    path = url.rsplit("/", 1)[-1] if url.count("/") >= 3 else ""
    return int(path) if path.isdigit() else 0


# --- the outbox ---------------------------------------------------------------------------------


def truncate_outbox():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {ATTEMPT_TABLE}, {ANSWER_TABLE}, {EVENT_TABLE} RESTART IDENTITY")


def order_event(number, recorded_at):
    """The Purchase row the receiver would have recorded at ``recorded_at`` for one paid order."""
    from tiktok_tracking.events import (
        BrowserContext,
        OrderFacts,
        build_event,
        match_key_mask,
    )
    from tiktok_tracking.hashing import hash_email, hash_external_id, hash_phone
    from tiktok_tracking.models import TrackedEvent

    country, consent, locale, currency = BUYERS[number % len(BUYERS)]
    lines = PRODUCTS[: 1 + number % len(PRODUCTS)]
    contents = tuple(
        {
            "content_id": sku,
            "content_name": name,
            "quantity": 1 + number % 2,
            "price": Decimal(price),
        }
        for sku, name, price in lines
    )
    order_id = f"B{number:07d}"
    facts = OrderFacts(
        order_id=order_id,
        value=sum(item["price"] * item["quantity"] for item in contents),
        currency=currency,
        contents=contents,
        email_sha256=hash_email(f"buyer{number}@example.com"),
        phone_sha256=hash_phone(f"+1 202 555 {number % 10000:04d}") if number % 2 else None,
        external_id_sha256=hash_external_id(f"C-{number}"),
        country=country,
    )
    context = BrowserContext(
        ttclid=f"E.C.P.click{number:012d}" if number % 5 == 0 else None,
        ttp=f"01HZ{number:022d}",
        ip=f"203.0.113.{number % 250 + 1}",
        user_agent=USER_AGENTS[number % len(USER_AGENTS)],
        page_url=f"https://shop.example.com/pay/{order_id}/",
        locale=locale,
    )
    payload = build_event("Purchase", facts, event_time=recorded_at, context=context)
    return TrackedEvent(
        pixel_id=PIXEL_ID,
        event="Purchase",
        event_id=payload["event_id"],
        order_id=order_id,
        status=TrackedEvent.Status.PENDING,
        payload=payload,
        event_time=recorded_at,
        next_attempt_at=recorded_at,
        visitor_id=f"bench-visitor-{number:08d}",
        country=country,
        consent_status=consent,
        match_keys=match_key_mask(payload),
    )


def seed_due_events(count, same_due_time=False):
    """``count`` due Purchase rows (an empty outbox first); returns their event_ids.

    One order a millisecond up to now, as a backlog builds up while delivery lags; or, with
    ``same_due_time``, every row due at one instant, as the sweeper leaves rows whose leases
    expired.

    COPY rather than bulk_create: 100,000 rows load in seconds instead of most of a minute. Each
    value goes through its model field as the ORM would save it.
    """
    from django.db import connection, transaction
    from django.utils import timezone as django_timezone
    from psycopg import sql

    from tiktok_tracking.models import TrackedEvent

    truncate_outbox()
    now = django_timezone.now()
    fields = [field for field in TrackedEvent._meta.concrete_fields if not field.primary_key]
    copy_rows = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(EVENT_TABLE),
        sql.SQL(", ").join(sql.Identifier(field.column) for field in fields),
    )
    event_ids = []
    with (
        transaction.atomic(),
        connection.cursor() as cursor,
        cursor.cursor.copy(copy_rows) as copy,
    ):
        for number in range(count):
            recorded_at = now if same_due_time else now - timedelta(milliseconds=count - number)
            row = order_event(number, recorded_at)
            copy.write_row(
                [field.get_db_prep_save(field.pre_save(row, True), connection) for field in fields]
            )
            event_ids.append(row.event_id)
    with connection.cursor() as cursor:
        # Fresh statistics, as a long-lived outbox would have, so the claim's plan is the real one.
        cursor.execute(f"ANALYZE {EVENT_TABLE}")
    return event_ids


def remaining_events(cursor):
    # Two counts, each answered by its partial index (due rows, leased rows).
    cursor.execute(
        f"SELECT (SELECT count(*) FROM {EVENT_TABLE} WHERE status = 'pending')"  # noqa: S608
        f" + (SELECT count(*) FROM {EVENT_TABLE} WHERE status = 'sending')"
    )
    return cursor.fetchone()[0]


def any_events_left(cursor):
    """Whether a row is still due or leased: the drain's poll, every POLL_INTERVAL.

    Each partial index is read up to its first live row, not counted through: counting up to
    100,000 churning rows forty times a second cost this process's PostgreSQL backend a quarter
    of a core, taken from the drain it was timing.
    """
    cursor.execute(
        f"SELECT EXISTS (SELECT 1 FROM {EVENT_TABLE} WHERE status = 'pending')"  # noqa: S608
        f" OR EXISTS (SELECT 1 FROM {EVENT_TABLE} WHERE status = 'sending')"
    )
    return cursor.fetchone()[0]


def outbox_statuses():
    from django.db.models import Count

    from tiktok_tracking.models import TrackedEvent

    return dict(TrackedEvent.objects.values_list("status").annotate(rows=Count("pk")))


def request_figures():
    """Per request, from the attempt log: how many there were and their HTTP round trips."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT max(a.duration_ms), count(*) FROM {ANSWER_TABLE} a"  # noqa: S608
            f" JOIN {ATTEMPT_TABLE} t ON t.answer_id = a.id GROUP BY a.request_id, a.attempted_at"
        )
        rows = cursor.fetchall()
    durations = [duration for duration, _ in rows]
    return {
        "requests": len(rows),
        "attempts": sum(events for _, events in rows),
        "http_median_ms": statistics.median(durations) if durations else 0.0,
    }


# --- workers and the broker ---------------------------------------------------------------------


def publish_deliver_tasks(redis_url, queues):
    """What the receivers do after a commit: one deliver_events message, here on each queue."""
    from celery import Celery

    app = Celery("bench-delivery", broker=redis_url, set_as_current=False)
    try:
        for queue in queues:
            app.send_task(DELIVER_TASK, queue=queue)
    finally:
        app.close()


def worker_names(count, label):
    """One name per worker, which is also the name of the worker's own queue."""
    prefix = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return [f"{prefix}-{index}" for index in range(count)]


def start_workers(names, env, log_dir):
    """One solo worker per name, listening on the shared queue and its own; returns them ready."""
    from tests.processes import start_worker

    workers = []
    try:
        for name in names:
            workers.append(
                start_worker(env, log_dir, name=name, extra_args=["-Q", f"celery,{name}"])
            )
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers):
    for worker in workers:
        worker.stop()


def warm_up(workers, names, redis_url):
    """One task per worker on the empty outbox, so imports and connections are not timed."""
    from tests.processes import poll_until

    publish_deliver_tasks(redis_url, names)
    poll_until(
        lambda: all(TASK_DONE_LOG_LINE in worker.log() for worker in workers),
        timeout=60,
        message="the warm-up tasks",
    )


def memory_kb(pid):
    """The process's resident set now and at its peak (VmRSS, VmHWM), in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


class CpuMeter:
    """CPU time a drain costs: the workers, their PostgreSQL backends, and the sandbox.

    The sandbox's share is this process's time less this thread's (the polling), or, where the
    sandbox runs as a process of its own (``sandbox_pid``), that process's time. Backends are
    read while the drain runs, since they end with each task.
    """

    def __init__(self, worker_pids, cursor, sandbox_pid=None):
        self.worker_start = {pid: cpu_seconds(pid) or 0.0 for pid in worker_pids}
        self.sandbox_pid = sandbox_pid
        self.machine_start = machine_cpu_times()
        self.sandbox_start = (cpu_seconds(sandbox_pid) or 0.0) if sandbox_pid else 0.0
        self.process_start = time.process_time()
        self.thread_start = time.thread_time()
        self.backends = {}
        for pid, used in self.backend_times(cursor):
            self.backends[pid] = (used, used)

    @staticmethod
    def backend_times(cursor):
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        for (pid,) in cursor.fetchall():
            used = cpu_seconds(pid)
            if used is not None:
                yield pid, used

    def sample(self, cursor):
        for pid, used in self.backend_times(cursor):
            # A backend first seen during the drain was started by it: all its time counts.
            start = self.backends.get(pid, (0.0, 0.0))[0]
            self.backends[pid] = (start, used)

    def machine_busy(self):
        """The share of every core's time that was busy since the start: the processes above,
        and what they do not count (Redis, the kernel's network work, this process)."""
        return busy_share(self.machine_start, machine_cpu_times())

    def totals(self):
        workers = sum(
            (cpu_seconds(pid) or start) - start for pid, start in self.worker_start.items()
        )
        postgres = sum(last - start for start, last in self.backends.values())
        if self.sandbox_pid:
            return workers, postgres, (cpu_seconds(self.sandbox_pid) or 0.0) - self.sandbox_start
        polling = time.thread_time() - self.thread_start
        return workers, postgres, time.process_time() - self.process_start - polling


# --- one drain ----------------------------------------------------------------------------------


@dataclass
class Drain:
    label: str
    events: int
    workers: int
    batch_size: int
    seconds: float = 0.0
    completed: bool = False
    requests: int = 0
    attempts: int = 0
    http_median_ms: float = 0.0
    statuses: dict = field(default_factory=dict)
    duplicates: int = 0
    missing: int = 0
    unexpected: int = 0
    rejected_requests: int = 0
    claimed_per_worker: list = field(default_factory=list)
    idle_rss_kb: int = 0
    idle_hwm_kb: int = 0
    peak_kb: int = 0
    seed_seconds: float = 0.0
    cpu_workers: float = 0.0
    cpu_postgres: float = 0.0
    cpu_sandbox: float = 0.0
    # The latency proxies' share, where a drain runs through them (bench.distance).
    cpu_proxies: float = 0.0
    # The share of all cores busy during the drain, whoever used them; None without /proc.
    machine_busy: float | None = None

    @property
    def per_second(self):
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def exactly_once(self):
        delivered = self.statuses.get("delivered", 0)
        return (
            self.completed
            and not (self.duplicates or self.missing or self.unexpected)
            # The sandbox refuses nothing valid: a refusal means a bad payload or token.
            and not self.rejected_requests
            and delivered == self.events == sum(self.statuses.values())
        )


def run_drain(args, run_dir, sandbox, drain, *, worker_database_url=None, worker_broker_url=None):
    """Start and warm up the workers, seed, publish, time until no row is left to send, check.

    The workers reach PostgreSQL and Redis at ``worker_database_url`` and ``worker_broker_url``
    when given (through a latency proxy: bench.distance), else where this process does.
    """
    from django.db import connection

    print(
        f"{drain.label}: {drain.events:,} due events, "
        f"{drain.workers} worker(s), BATCH_SIZE {drain.batch_size} ...",
        flush=True,
    )
    truncate_outbox()
    sandbox.reset()
    flush_broker(args.redis_url)
    env = child_environment(
        worker_database_url or args.database_url,
        run_dir,
        sandbox.events_url,
        worker_broker_url or args.redis_url,
        TIKTOK_BATCH_SIZE=str(drain.batch_size),
        TIKTOK_DRAIN_SECONDS=str(DRAIN_SECONDS),
    )
    log_dir = Path(run_dir) / "logs"
    log_dir.mkdir(exist_ok=True)
    names = worker_names(drain.workers, drain.label)
    workers = start_workers(names, env, log_dir)
    try:
        warm_up(workers, names, args.redis_url)
        started = time.perf_counter()
        expected = seed_due_events(drain.events, args.same_due_time)
        drain.seed_seconds = time.perf_counter() - started
        drain.idle_rss_kb, drain.idle_hwm_kb = memory_kb(workers[0].pid)
        # Generous: two seconds per request, and never under two minutes.
        timeout = max(120.0, drain.events / drain.batch_size * 2.0)
        with connection.cursor() as cursor:
            # Measured from here to the last row sent, not while the received events are checked.
            meter = CpuMeter(
                [worker.pid for worker in workers], cursor, getattr(sandbox, "pid", None)
            )
            started = time.perf_counter()
            # One task on each worker's own queue: every worker takes part from the start.
            publish_deliver_tasks(args.redis_url, names)
            while True:
                left = any_events_left(cursor)
                elapsed = time.perf_counter() - started
                meter.sample(cursor)
                if not left:
                    drain.completed = True
                    break
                if elapsed > timeout:
                    left = remaining_events(cursor)
                    print(f"  gave up after {elapsed:.0f} s with {left:,} events not sent")
                    break
                for worker in workers:
                    if worker.process.poll() is not None:
                        sys.exit(f"A worker exited during the drain:\n{worker.log()}")
                time.sleep(POLL_INTERVAL)
        drain.seconds = elapsed
        drain.cpu_workers, drain.cpu_postgres, drain.cpu_sandbox = meter.totals()
        drain.machine_busy = meter.machine_busy()
        drain.peak_kb = memory_kb(workers[0].pid)[1]
    finally:
        stop_workers(workers)
    drain.claimed_per_worker = [
        sum(int(count) for count in CLAIMED_LOG_LINE.findall(worker.log())) for worker in workers
    ]
    drain.statuses = outbox_statuses()
    figures = request_figures()
    drain.requests, drain.attempts = figures["requests"], figures["attempts"]
    drain.http_median_ms = figures["http_median_ms"]
    check_received(sandbox, expected, drain)
    print(
        f"  {drain.per_second:,.0f} events/s ({drain.seconds:.2f} s; seeding took "
        f"{drain.seed_seconds:.1f} s)",
        flush=True,
    )
    return drain


def check_received(sandbox, expected, drain):
    """Count the event_ids the sandbox accepted: each seeded one exactly once, nothing else."""
    received = Counter()
    for record in sandbox.requests:
        body = record["body"]
        accepted = record["answer"]["status"] == 200 and record["answer"]["code"] == 0
        if not accepted:
            drain.rejected_requests += 1
            continue
        received.update(item.get("event_id") for item in body["data"])
    expected = set(expected)
    drain.duplicates = sum(count - 1 for count in received.values() if count > 1)
    drain.missing = len(expected - received.keys())
    drain.unexpected = len(received.keys() - expected)
    # The sandbox keeps every body; a 100,000-event drain would hold on to them until the next.
    sandbox.reset()


# --- where the time goes: one drain in-process, with timers -------------------------------------


class StatementTimer:
    """Django execute wrapper: the time of each SQL statement, by verb, table and new status."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.counts = Counter()

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            kind = statement_kind(sql, params)
            self.seconds[kind] += time.perf_counter() - started
            self.counts[kind] += 1


def statement_kind(sql, params):
    verb = sql.lstrip().split(None, 1)[0].upper()
    table = SQL_TABLE.search(sql)
    kind = f"{verb} {table.group(1) if table else '?'}"
    if verb == "UPDATE" and "RETURNING" in sql and "SKIP LOCKED" in sql:
        return f"{kind} -> sending, RETURNING the rows (the claim)".replace("tiktok_tracking_", "")
    if verb == "WITH" and "UPDATE" in sql:
        # sql.settle: the answer, its attempt log and the rows' new status in one statement.
        return "WITH INSERT deliveryanswer, INSERT deliveryattempt, UPDATE trackedevent (settled)"
    if "FOR UPDATE" in sql and "SKIP LOCKED" in sql:
        kind += " FOR UPDATE SKIP LOCKED"
    if verb == "UPDATE" and SQL_STATUS_SET.search(sql) and params:
        kind += f" -> {params[0]}"
    return kind.replace("tiktok_tracking_", "")


def timed_client_class():
    """EventsApiClient whose sends and HTTP posts are timed; the request itself is unchanged."""
    from django.views.decorators.debug import sensitive_variables

    from tiktok_tracking.client import EventsApiClient

    class TimedClient(EventsApiClient):
        def __init__(self, *args, **kwargs):
            self.send_seconds = 0.0
            self.post_seconds = 0.0
            super().__init__(*args, **kwargs)

        def create_session(self):
            session = super().create_session()
            post = session.post

            def timed_post(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return post(*args, **kwargs)
                finally:
                    self.post_seconds += time.perf_counter() - started

            session.post = timed_post
            return session

        @sensitive_variables("access_token")
        def send_encoded(self, data, event_count, access_token=None):
            started = time.perf_counter()
            try:
                return super().send_encoded(data, event_count, access_token)
            finally:
                self.send_seconds += time.perf_counter() - started

    return TimedClient


def median_seconds(function, repeats=5):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def sandbox_cost_per_request(token):
    """The sandbox's own work on a full request: parsing it, and parsing plus strict validation."""
    import json

    from tiktok_tracking.events import build_request_body
    from tiktok_tracking.models import TrackedEvent
    from tiktok_tracking.sandbox.validation import parse_body, validate_request

    items = [row.payload for row in TrackedEvent.objects.order_by("pk")[:BATCH_SIZE]]
    raw = json.dumps(
        build_request_body(PIXEL_ID, items), separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    headers = {"Access-Token": token, "Content-Type": "application/json"}
    now = time.time()
    validate = median_seconds(
        lambda: validate_request(headers, raw, expected_token=token, allowed_pixels=None, now=now)
    )
    parse = median_seconds(lambda: parse_body(raw))
    return validate, parse, len(raw)


def row_loading_cost():
    """Fetching 1,000 outbox rows as the claim does: the query, then the rows in Python."""
    from django.db import connection

    from tiktok_tracking.delivery import load_claimed
    from tiktok_tracking.models import TrackedEvent

    timer = StatementTimer()
    ids = list(TrackedEvent.objects.order_by("pk").values_list("pk", flat=True)[:BATCH_SIZE])
    query = TrackedEvent.objects.filter(pk__in=ids)
    totals, executes = [], []
    with connection.execute_wrapper(timer):
        for _ in range(5):
            before = sum(timer.seconds.values())
            started = time.perf_counter()
            load_claimed(query.all())
            totals.append(time.perf_counter() - started)
            executes.append(sum(timer.seconds.values()) - before)
    return statistics.median(executes), statistics.median(totals) - statistics.median(executes)


def profile_drain(events, sandbox, same_due_time):
    """Drain ``events`` in this process with BATCH_SIZE 1000 and time each step of each batch."""
    from django.db import connection

    from tiktok_tracking import conf
    from tiktok_tracking.delivery import deliver_due_events

    print(f"Breakdown: seeding {events:,} due events, draining in-process ...", flush=True)
    seed_due_events(events, same_due_time)
    sandbox.reset()
    token = conf.require("ACCESS_TOKEN")
    # The settings' TIMEOUT: a longer one than the lease allows would send nothing (E009).
    client = timed_client_class()(sandbox.events_url, token, timeout=float(conf.get("TIMEOUT")))
    timer = StatementTimer()
    try:
        with connection.execute_wrapper(timer):
            started = time.perf_counter()
            report = deliver_due_events(
                client=client, batch_size=BATCH_SIZE, max_seconds=DRAIN_SECONDS
            )
            total = time.perf_counter() - started
    finally:
        client.close()
    sandbox.reset()
    if report.delivered != events:
        print(f"  the in-process drain delivered {report.delivered:,} of {events:,} events")
    validate, parse, body_bytes = sandbox_cost_per_request(token)
    load_execute, load_decode = row_loading_cost()
    return {
        "events": events,
        "delivered": report.delivered,
        "batches": report.requests,
        "total": total,
        "statements": timer,
        "send": client.send_seconds,
        "post": client.post_seconds,
        "sandbox_validate": validate,
        "sandbox_parse": parse,
        "body_bytes": body_bytes,
        "load_execute": load_execute,
        "load_decode": load_decode,
    }


# --- the report ---------------------------------------------------------------------------------


def versions():
    import celery
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    python = sys.version.split()[0]
    return (
        f"PostgreSQL {postgres}; Django {django.get_version()}; Celery {celery.__version__}; "
        f"Python {python}"
    )


def verdict(ok):
    return "ok" if ok else "MISS"


def mb(kb):
    return kb / 1024


def print_header(same_due_time):
    print()
    print("Delivery: PostgreSQL outbox -> Celery worker(s) -> sandbox over HTTP")
    print(f"  date       {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"  versions   {versions()}")
    print(f"  cpus       {os.cpu_count()} (PostgreSQL, the sandbox and the workers share them)")
    print(
        "  workers    celery worker --pool=solo, one process each, Redis broker; "
        "one deliver_events task per worker"
    )
    print(
        f"  sandbox    in this process, answers after {SANDBOX_LATENCY * 1000:.0f} ms, "
        "validates every event first"
    )
    due = (
        "every row due at the same instant (--same-due-time)"
        if same_due_time
        else "one order a millisecond up to the start (all due)"
    )
    print(f"  outbox     Purchase rows of about 850 bytes of JSON, {due}")
    print(
        "  timing     from the publish of the tasks until no row is pending or sending "
        f"(polled every {POLL_INTERVAL * 1000:.0f} ms)"
    )


def print_drains(drains):
    print()
    header = (
        f"{'drain':<26} {'events':>7} {'workers':>7} {'batch':>5} {'wall s':>7} "
        f"{'events/s':>9} {'requests':>8} {'HTTP ms':>7} {'once':>5}"
    )
    print(header)
    print("-" * len(header))
    for drain in drains:
        print(
            f"{drain.label:<26} {drain.events:>7,} {drain.workers:>7} {drain.batch_size:>5} "
            f"{drain.seconds:>7.2f} {drain.per_second:>9,.0f} {drain.requests:>8,} "
            f"{drain.http_median_ms:>7.0f} {'yes' if drain.exactly_once else 'NO':>5}"
        )
    print("  HTTP ms: median round trip of one request as the worker timed it (the sandbox's")
    print("  validation plus its latency); once: every event received once, every row delivered.")
    print()
    cpus = os.cpu_count() or 1
    header = (
        f"{'CPU ms per 1,000 events':<26} {'workers':>8} {'Postgres':>8} {'sandbox':>8} "
        f"{'total':>7}  {'ceiling on ' + str(cpus) + ' cpus':>19}"
    )
    print(header)
    print("-" * len(header))
    for drain in drains:
        per_thousand = 1000 / drain.events * 1000
        parts = (drain.cpu_workers, drain.cpu_postgres, drain.cpu_sandbox)
        total = sum(parts)
        ceiling = cpus * drain.events / total if total else 0.0
        print(
            f"{drain.label:<26} "
            + " ".join(f"{part * per_thousand:>8.0f}" for part in parts)
            + f" {total * per_thousand:>7.0f}  {ceiling:>12,.0f} events/s"
        )
    print("  Postgres: the backends of the workers' connections; sandbox: its threads in this")
    print("  process. Ceiling: the rate at which that CPU time would fill every core.")


def print_targets(throughput, single, memory, scale_out):
    print()
    print(
        f"Throughput, 1 worker, BATCH_SIZE {BATCH_SIZE:<5} {throughput.per_second:>9,.0f} events/s"
        f"   target >= {TARGET_EVENTS_PER_SECOND:,}   "
        f"{verdict(throughput.per_second >= TARGET_EVENTS_PER_SECOND)}"
    )
    if single is not None:
        ratio = throughput.per_second / single.per_second if single.per_second else 0.0
        minutes = throughput.events / single.per_second / 60 if single.per_second else 0.0
        print(
            f"  baseline, BATCH_SIZE 1            {single.per_second:>9,.1f} events/s"
            f"   (timed over {single.events:,} events: all {throughput.events:,} would take "
            f"{minutes:.0f} min)"
        )
        print(
            f"  ratio                             {ratio:>9,.0f} x"
            f"          target >= {TARGET_BATCH_RATIO} x     {verdict(ratio >= TARGET_BATCH_RATIO)}"
        )
    per_request = throughput.seconds / throughput.requests * 1000 if throughput.requests else 0
    print(
        f"  wall time per request             {per_request:>9.0f} ms, of which HTTP "
        f"{throughput.http_median_ms:.0f} ms (median); the rest is the worker and PostgreSQL"
    )
    if memory is not None:
        ratio = memory.peak_kb / memory.idle_rss_kb if memory.idle_rss_kb else 0.0
        peak_ok = mb(memory.peak_kb) <= TARGET_PEAK_MB
        print()
        print(
            f"Worker peak RSS, {memory.events:,} events {mb(memory.peak_kb):>11.1f} MB"
            f"         target <= {TARGET_PEAK_MB} MB   {verdict(peak_ok)}"
        )
        print(
            f"  baseline, idle before the drain   {mb(memory.idle_rss_kb):>9.1f} MB"
            f"         (VmHWM until then {mb(memory.idle_hwm_kb):.1f} MB)"
        )
        print(f"  ratio                             {ratio:>9.2f} x")
    if scale_out:
        base = scale_out[0]
        print()
        print(f"Scale-out on one outbox, {base.events:,} events per drain")
        header = (
            f"{'workers':>7} {'events/s':>9} {'vs ' + str(base.workers):>6} "
            f"{'dupl.':>6} {'missing':>7} {'not delivered':>13} {'once':>5}  "
            "events claimed per worker"
        )
        print(header)
        print("-" * len(header))
        for drain in scale_out:
            not_delivered = sum(
                rows for status, rows in drain.statuses.items() if status != "delivered"
            )
            shares = ", ".join(f"{count:,}" for count in drain.claimed_per_worker)
            speed_up = drain.per_second / base.per_second if base.per_second else 0.0
            print(
                f"{drain.workers:>7} {drain.per_second:>9,.0f} {speed_up:>5.2f}x "
                f"{drain.duplicates:>6} {drain.missing:>7} {not_delivered:>13} "
                f"{'ok' if drain.exactly_once else 'FAIL':>5}  {shares}"
            )


def print_breakdown(profile):
    if profile is None:
        return
    batches = max(profile["batches"], 1)

    def ms(seconds):
        return seconds / batches * 1000

    statements = profile["statements"]
    rest = profile["total"] - sum(statements.seconds.values())
    rows = [
        (f"SQL {kind}", seconds, statements.counts[kind] / batches)
        for kind, seconds in sorted(statements.seconds.items(), key=lambda item: -item[1])
    ]
    rows += [
        ("Python, and waiting for an answer still on the wire", rest, None),
    ]
    print()
    print(
        f"Where the time goes: {profile['events']:,} events drained in this process, "
        f"{batches} request(s) of {BATCH_SIZE}, {profile['events'] / profile['total']:,.0f} "
        "events/s"
    )
    step = f"step, per request of {BATCH_SIZE:,} events"
    header = f"{step:<62} {'ms':>7} {'calls':>5}"
    print(header)
    print("-" * len(header))
    for label, seconds, calls in rows:
        shown_calls = f"{calls:>5.1f}" if calls is not None else ""
        print(f"{label:<62} {ms(seconds):>7.1f} {shown_calls}".rstrip())
    print(f"{'total (wall time)':<62} {ms(profile['total']):>7.1f}")
    print("  SQL: time in cursor.execute (psycopg adapting the parameters, the server's work).")
    print(
        f"  On the sending thread, overlapping the above: HTTP round trip (the sandbox's work + "
        f"{SANDBOX_LATENCY * 1000:.0f} ms latency) {ms(profile['post']):.1f} ms, reading the "
        f"answer {ms(profile['send'] - profile['post']):.1f} ms."
    )
    print("Measured apart, per request of 1,000 events:")
    print(
        f"  loading 1,000 claimed rows: query {profile['load_execute'] * 1000:.1f} ms, "
        f"fetching them into Python {profile['load_decode'] * 1000:.1f} ms (in the Python line)"
    )
    print(
        f"  the sandbox on a {profile['body_bytes'] / 1e6:.2f} MB body: parsing "
        f"{profile['sandbox_parse'] * 1000:.1f} ms, then validating "
        f"{(profile['sandbox_validate'] - profile['sandbox_parse']) * 1000:.1f} ms "
        "(in the HTTP round trip)"
    )


# --- main ---------------------------------------------------------------------------------------


def stop_on_signal(signum, frame):
    raise SystemExit(f"Stopped by signal {signum}.")


@contextmanager
def outbox_database(url, purpose, *, keep=False, prefix="tiktok-bench-delivery-"):
    """The benchmark's PostgreSQL database, Django set up on it; yields a scratch folder.

    Created if missing and dropped after if this run created it; one that existed has its
    tracking tables emptied, unless ``keep``. Stopped from outside (SIGTERM), the benchmark
    still stops its workers and drops its database.
    """
    signal.signal(signal.SIGTERM, stop_on_signal)
    name = database_name(url, purpose)
    created = create_postgres_database(url, name)
    if created:
        print(f"Created database {name}.")
    run_dir = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    django_ready = False
    try:
        setup_django(url, run_dir)
        django_ready = True
        yield run_dir
    finally:
        if keep:
            print(f"Kept database {name} with the rows of the last drain (--keep).")
        elif created:
            drop_postgres_database(url, name)
            print(f"Dropped database {name}.")
        elif django_ready:
            truncate_outbox()
            print(f"Emptied the tracking tables of {name}.")


def main(argv=None):
    args = parse_args(argv)
    with outbox_database(args.database_url, PURPOSE, keep=args.keep) as run_dir:
        from tiktok_tracking import conf
        from tiktok_tracking.sandbox.server import SandboxServer

        sandbox = SandboxServer(token=conf.require("ACCESS_TOKEN"), latency=SANDBOX_LATENCY)
        sandbox.start()
        single = memory = profile = None
        try:
            scale_out = []
            for count in args.workers:
                label = f"{count} worker{'s' if count > 1 else ''}, batch {BATCH_SIZE}"
                drain = Drain(label, args.events, count, BATCH_SIZE)
                scale_out.append(run_drain(args, run_dir, sandbox, drain))
            drains = list(scale_out)
            throughput = next((drain for drain in scale_out if drain.workers == 1), None)
            if throughput is None:
                label = f"1 worker, batch {BATCH_SIZE}"
                throughput = run_drain(
                    args, run_dir, sandbox, Drain(label, args.events, 1, BATCH_SIZE)
                )
                drains.append(throughput)
            if args.single_events:
                single = run_drain(
                    args, run_dir, sandbox, Drain("1 worker, batch 1", args.single_events, 1, 1)
                )
                drains.append(single)
            if args.memory_events:
                label = f"memory, batch {BATCH_SIZE}"
                memory = run_drain(
                    args, run_dir, sandbox, Drain(label, args.memory_events, 1, BATCH_SIZE)
                )
                drains.append(memory)
            if args.profile_events:
                profile = profile_drain(args.profile_events, sandbox, args.same_due_time)
        finally:
            sandbox.stop()
            flush_broker(args.redis_url)

        print_header(args.same_due_time)
        print_drains(drains)
        print_targets(throughput, single, memory, scale_out)
        print_breakdown(profile)
        failed = [drain for drain in drains if not drain.exactly_once]
        print()
        for drain in failed:
            print(
                f"FAIL {drain.label}: {drain.duplicates} duplicate(s), {drain.missing} missing, "
                f"{drain.unexpected} unexpected, {drain.rejected_requests} rejected request(s), "
                f"{drain.attempts} delivery attempt(s), rows by status {drain.statuses}"
                + ("" if drain.completed else ", drain did not finish")
            )
        if profile is not None and profile["delivered"] != profile["events"]:
            # A breakdown of a drain that did not deliver times retries, not deliveries.
            failed.append(profile)
            print(
                f"FAIL the in-process drain delivered {profile['delivered']:,} of "
                f"{profile['events']:,} events: its breakdown does not time deliveries"
            )
        if not failed:
            print("Every event delivered exactly once in every drain.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
