"""Checkout: what the app adds to the shop's checkout page and payment confirmation.

``--profile`` instead shows where the payment's time goes with the app installed: its SQL
statements, the time in the database against the time in Python, and the app's functions
under cProfile.
"""

import argparse
import atexit
import cProfile
import functools
import logging
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

from bench.common import (
    NO_FIGURE,
    P99_MIN_SAMPLES,
    cell,
    create_postgres_database,
    database_name,
    difference,
    drop_postgres_database,
    is_postgres,
    make_orders,
    percentile_note,
    setup_django,
    share,
    spread,
)

# Why the benchmark refuses databases not named for it.
PURPOSE = "writes orders and events into it"
# Timed requests per column: enough for a p99 (P99_MIN_SAMPLES) by default.
DEFAULT_ORDERS = P99_MIN_SAMPLES
# The naive column waits 300 ms for TikTok per request: it keeps fewer samples, and no p99.
DEFAULT_NAIVE_ORDERS = 100
DEFAULT_PROFILE_ORDERS = 500
WARMUP_ORDERS = 10
# Column (c) waits 300 ms a request: its warm-up only needs to load the code and connect.
NAIVE_WARMUP_ORDERS = 2
# The columns take turns in this many rounds; after the first, each slice warms up briefly.
DEFAULT_ROUNDS = 5
ROUND_WARMUP_ORDERS = 3
# How long the publisher may take, after a column, to publish (or fail to publish) its wake-ups:
# with the broker down each attempt waits out Celery's connection timeout.
PUBLISH_FLUSH_SECONDS = 60
SANDBOX_LATENCY = 0.3
TARGET_ADDED_MEDIAN_MS = 2
TARGET_ADDED_P99_MS = 5
TARGET_CAPTURE_MEDIAN_MS = 1
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"
# Nothing listens on port 9 (discard): TikTok unreachable.
UNREACHABLE_API_URL = "http://127.0.0.1:9/open_api/v1.3/event/track/"
DISPATCH_UID = "tiktok_tracking.on_payment_completed"
NAIVE_DISPATCH_UID = "bench.checkout.naive"
# The payment: POST /pay/<number>/.
PAY_COLUMNS = (
    ("a", "app installed"),
    ("b", "receiver disconnected"),
    ("c", "naive: sync POST"),
    ("d", "app, broker down"),
    ("e", "app, API down"),
)
# The checkout page: POST /checkout/, the view that creates the order and calls capture_context.
PAGE_COLUMNS = (
    ("f", "capture_context"),
    ("g", "capture_context, no funnel"),
    ("h", "without capture_context"),
)
COLUMN_LABELS = dict(PAY_COLUMNS + PAGE_COLUMNS)
# The checkout page's request: an ad click's id in the URL, TikTok's cookie, a browser's headers.
CHECKOUT_PATH = "/checkout/?ttclid=bench-click"
BROWSER_HEADERS = {
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
    "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9",
    "HTTP_REFERER": "https://shop.example/cart/",
}
# The app's default funnel events, which capture_context records (the test settings set none).
DEFAULT_FUNNEL_EVENTS = ("InitiateCheckout",)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.checkout",
        description="Time the test shop's checkout page and /pay/<number>/ with and without "
        "the app; --profile shows where the payment's time goes.",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=None,
        help=f"timed requests per column (default {DEFAULT_ORDERS:,}, the fewest a p99 is "
        f"printed from; with --profile {DEFAULT_PROFILE_ORDERS} payments per pass)",
    )
    parser.add_argument(
        "--naive-orders",
        type=int,
        default=DEFAULT_NAIVE_ORDERS,
        help=f"timed requests of column (c), each waiting {SANDBOX_LATENCY * 1000:.0f} ms for "
        f"the sandbox (default {DEFAULT_NAIVE_ORDERS}); below {P99_MIN_SAMPLES:,} no p99",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help=f"rounds in which the columns take turns (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the payment with the app installed instead of timing the columns",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="database to use (default: a temporary SQLite file), e.g. "
        "postgres://postgres@127.0.0.1:5432/tiktok_bench_checkout; its name must contain "
        "'bench'. A PostgreSQL database is created if missing and then dropped afterwards",
    )
    args = parser.parse_args(argv)
    if args.orders is None:
        args.orders = DEFAULT_PROFILE_ORDERS if args.profile else DEFAULT_ORDERS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.orders < args.rounds or args.naive_orders < args.rounds:
        parser.error("--orders and --naive-orders must be at least --rounds")
    return args


# --- the ways the payment can be confirmed ------------------------------------------------------


def naive_receiver(api_client):
    """A receiver posting the purchase to TikTok inside the request, as a first attempt would."""
    from tiktok_tracking import conf
    from tiktok_tracking.adapters import adapter_for
    from tiktok_tracking.context import context_from_request
    from tiktok_tracking.events import build_event, build_request_body, read_order

    def on_payment_completed(sender, order, request=None, **kwargs):
        facts = read_order(adapter_for(order))
        context = context_from_request(request) if request is not None else None
        item = build_event("Purchase", facts, event_time=time.time(), context=context)
        api_client.send(build_request_body(conf.get("PIXEL_ID"), [item]))

    return on_payment_completed


@contextmanager
def tracking_settings(**changes):
    """The app's settings with ``changes`` for the duration (read by the app at call time)."""
    from django.conf import settings

    saved = settings.TIKTOK_TRACKING
    settings.TIKTOK_TRACKING = {**saved, **changes}
    try:
        yield
    finally:
        settings.TIKTOK_TRACKING = saved


@contextmanager
def column_setup(column, api_client=None):
    """Connect the receivers (and break the broker or the API) that ``column`` measures."""
    from tests.celery_app import app
    from tests.shop import views as shop_views
    from tiktok_tracking.receivers import on_payment_completed
    from tiktok_tracking.signals import payment_completed

    def reset_pools():
        # Celery caches its connection and producer pools; drop them so the URL change counts.
        app._pool = None
        app.amqp._producer_pool = None

    saved_write_url = app.conf.get("broker_write_url")
    changes = {}
    patches = []
    if column in ("b", "c"):
        payment_completed.disconnect(dispatch_uid=DISPATCH_UID)
    if column == "c":
        payment_completed.connect(
            naive_receiver(api_client), dispatch_uid=NAIVE_DISPATCH_UID, weak=False
        )
    if column == "d":
        app.conf.broker_write_url = UNREACHABLE_BROKER
        reset_pools()
    if column == "e":
        changes["API_URL"] = UNREACHABLE_API_URL
    if column == "f":
        changes["SERVER_FUNNEL_EVENTS"] = DEFAULT_FUNNEL_EVENTS
    if column == "g":
        changes["SERVER_FUNNEL_EVENTS"] = ()
    if column == "h":
        # The shop's checkout view as it was before the app: the call left out.
        patches.append(
            mock.patch.object(shop_views, "capture_context", lambda request, order: None)
        )
    try:
        with tracking_settings(**changes):
            for patch in patches:
                patch.start()
            try:
                yield
            finally:
                for patch in patches:
                    patch.stop()
    finally:
        payment_completed.disconnect(dispatch_uid=NAIVE_DISPATCH_UID)
        payment_completed.connect(on_payment_completed, dispatch_uid=DISPATCH_UID)
        if column == "d":
            app.conf.broker_write_url = saved_write_url
            reset_pools()


def pay(client, number):
    started = time.perf_counter()
    response = client.post(f"/pay/{number}/")
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        sys.exit(f"POST /pay/{number}/ answered {response.status_code}, not 200")
    return elapsed_ms


def check_out(client, number):
    """The shop's checkout page: creates the order (one line), then stores its context."""
    started = time.perf_counter()
    response = client.post(
        CHECKOUT_PATH,
        {"number": number, "email": "Buyer@Example.com", "phone": "+1 202 555 0143"},
        **BROWSER_HEADERS,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        sys.exit(f"POST /checkout/ answered {response.status_code}, not 200")
    return elapsed_ms


class CountingHandler(logging.Handler):
    """Counts the app's warnings instead of printing a traceback per request."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += 1


@contextmanager
def counted_warnings():
    """The app's warnings and errors, counted (whichever of its modules logs them)."""
    logger = logging.getLogger("tiktok_tracking")
    handler = CountingHandler()
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.propagate = saved
        logger.removeHandler(handler)


def capture_checkouts(numbers):
    """What the checkout page does before the payment (untimed): the browser context stored."""
    from django.test import RequestFactory

    from tests.shop.models import Order
    from tiktok_tracking import capture_context

    factory = RequestFactory()
    for order in Order.objects.filter(number__in=numbers):
        request = factory.post(CHECKOUT_PATH, REMOTE_ADDR="203.0.113.7", **BROWSER_HEADERS)
        request.COOKIES.update({"country": "US", "_ttp": "bench-ttp"})
        capture_context(request, order)
    return numbers


def shop_client():
    from django.test import Client

    client = Client()
    # The shop's country switch: a US visitor, whose events the consent policy lets through.
    client.cookies["country"] = "US"
    client.cookies["_ttp"] = "bench-ttp"
    return client


def flush_publisher(column):
    """Wait for the app's wake-ups to meet this column's broker (its background thread)."""
    from tiktok_tracking.publisher import publisher

    if not publisher.flush(timeout=PUBLISH_FLUSH_SECONDS):
        sys.exit(f"column {column}: the publisher did not finish")


def run_pay_column(column, prefix, orders, warmups, api_client):
    """Warm up, then time one pay request per fresh order; returns the times and warnings."""
    client = shop_client()
    warmup = capture_checkouts(make_orders(f"{prefix}W", warmups))
    timed = capture_checkouts(make_orders(f"{prefix}T", orders))
    with column_setup(column, api_client), counted_warnings() as warnings:
        for number in warmup:
            pay(client, number)
        times = [pay(client, number) for number in timed]
        flush_publisher(column)
    return times, warnings.count


def run_page_column(column, prefix, orders, warmups):
    """Warm up, then time one checkout page per new order; returns the times and warnings."""
    client = shop_client()
    with column_setup(column), counted_warnings() as warnings:
        for index in range(warmups):
            check_out(client, f"{prefix}W-{index:05d}")
        times = [check_out(client, f"{prefix}T-{index:05d}") for index in range(orders)]
        flush_publisher(column)
    return times, warnings.count


# --- the report ---------------------------------------------------------------------------------


def check_effects(run, counts):
    """What each column left behind: every order paid or created, the app's rows and messages."""
    from tests.shop.models import Order
    from tiktok_tracking.models import CheckoutContext, TrackedEvent

    effects = {}
    for column in COLUMN_LABELS:
        prefix = f"{run}{column}"
        # The timed orders' numbers: <run><column>-<round>T-<index>; the warm-ups' have a W.
        timed = Order.objects.filter(number__startswith=f"{prefix}-", number__contains="T-")
        rows = TrackedEvent.objects.filter(
            order_id__startswith=f"{prefix}-", order_id__contains="T-"
        )
        if column in dict(PAY_COLUMNS):
            done = timed.filter(paid=True).count()
            rows = rows.filter(event="Purchase")
        else:
            done = timed.count()
            rows = rows.filter(event__in=DEFAULT_FUNNEL_EVENTS)
        effects[column] = {
            "done": done,
            "rows": rows.count(),
            "contexts": CheckoutContext.objects.filter(
                order_id__startswith=f"{prefix}-", order_id__contains="T-"
            ).count(),
        }
        if done != counts[column]:
            sys.exit(f"column {column}: {done} of {counts[column]} orders paid or created")
    # A capture that failed would be fast: every order of (f) and (g) must have its context.
    for column in ("f", "g"):
        if effects[column]["contexts"] != counts[column]:
            sys.exit(
                f"column {column}: {effects[column]['contexts']} of {counts[column]} checkouts "
                "stored their context"
            )
    return effects


def broker_messages(broker_dir):
    return sum(1 for name in os.listdir(broker_dir) if name.endswith(".msg"))


def database_version():
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]}"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}"


def print_table(columns, results, base, extra_name, extra):
    """One row per column: spread, its difference to column ``base``, and an extra count."""
    header = (
        f"{'column':<30} {'n':>5} {'median ms':>9} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'vs ' + base + ' med':>8} {'vs ' + base + ' p95':>8} {'vs ' + base + ' p99':>8} "
        f"{extra_name:>10}"
    )
    print(header)
    print("-" * len(header))
    reference = results[base]
    for column, label in columns:
        result = results[column]
        deltas = [difference(result[key], reference[key]) for key in ("median", "p95", "p99")]
        print(
            f"{'(' + column + ') ' + label:<30} {result['n']:>5} {result['median']:>9.2f} "
            f"{cell(result['p95'], 8)} {cell(result['p99'], 8)} "
            + " ".join(cell(delta, 8, "+.2f") for delta in deltas)
            + f" {extra[column]:>10}"
        )


def verdict(added, target):
    if added is None:
        return NO_FIGURE, None
    ok = added <= target
    return "ok" if ok else "MISS", ok


def print_report(results, effects, messages, warnings, sandbox_requests, rounds):
    import django

    counts = {column: result["n"] for column, result in results.items()}
    print()
    print("Checkout: the test shop's checkout page and payment confirmation")
    print(f"  date       {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    python = sys.version.split()[0]
    print(f"  versions   {database_version()}; Django {django.get_version()}; Python {python}")
    print(
        f"  method     Django test Client in-process, one request per new order; {counts['a']:,} "
        f"timed requests per column ({counts['c']:,} for (c)),"
    )
    print(
        f"             the columns taking turns in {rounds} rounds ({WARMUP_ORDERS} warm-ups per "
        f"column, then {ROUND_WARMUP_ORDERS} per slice; (c) {NAIVE_WARMUP_ORDERS}, then 1)"
    )
    print(f"  sandbox    answers after {SANDBOX_LATENCY * 1000:.0f} ms (column c only)")
    print("  broker     filesystem transport, no worker: the messages pile up (d: broker down)")
    print("  API        (e): TikTok unreachable (nothing listens on the API URL)")
    print(
        f"  targets    capture_context adds <= {TARGET_CAPTURE_MEDIAN_MS} ms median (f - h); "
        f"the payment <= {TARGET_ADDED_MEDIAN_MS} ms median, <= {TARGET_ADDED_P99_MS} ms p99 "
        "(a - b)"
    )
    print()
    print(
        "Checkout page: POST /checkout/ (the view creates the order and its line, then calls "
        "capture_context)"
    )
    print(
        "  (f) as the app ships: the context stored and the InitiateCheckout event recorded "
        "(SERVER_FUNNEL_EVENTS default)"
    )
    print("  (g) SERVER_FUNNEL_EVENTS = (): the context stored only (the test settings)")
    print("  (h) the same view without the capture_context call")
    print()
    funnel = {
        column: f"{effects[column]['contexts']}/{effects[column]['rows']}"
        for column, _ in PAGE_COLUMNS
    }
    print_table(PAGE_COLUMNS, results, "h", "ctx/evts", funnel)
    print()
    print("Payment: POST /pay/<number>/ (marks the order paid, sends payment_completed)")
    print()
    events = {column: effects[column]["rows"] for column, _ in PAY_COLUMNS}
    print_table(PAY_COLUMNS, results, "b", "events", events)
    print()
    note = percentile_note(list(counts.values()), unit="requests")
    if note:
        print(f"  {note}")
        if counts["c"] < P99_MIN_SAMPLES <= counts["a"]:
            print(
                f"  (c) takes {SANDBOX_LATENCY * 1000:.0f} ms a request: {counts['c']:,} of them "
                f"show its cost; a p99 would need {P99_MIN_SAMPLES:,} ({NO_FIGURE} above)"
            )
    print(
        f"  ctx/evts: checkout contexts stored / {', '.join(DEFAULT_FUNNEL_EVENTS)} rows "
        "recorded, for the timed orders"
    )
    print(
        f"  broker messages published (a): {messages['a']} for {counts['a']:,} timed orders and "
        "their warm-ups (wake-ups waiting together are published as one)"
    )
    print(f"  broker messages published (d): {messages['d']} (broker down: none expected)")
    print(f"  enqueue failures logged (d):   {warnings['d']} (the sweeper delivers those events)")
    print(f"  broker messages published (e): {messages['e']}")
    print(f"  broker messages published (f): {messages['f']} (the InitiateCheckout events)")
    print(f"  sandbox requests received (c): {sandbox_requests}")
    other = {column: count for column, count in warnings.items() if count and column != "d"}
    if other:
        print(f"  app warnings logged:           {other}")
    print()
    verdicts = []
    checks = [
        ("f", "h", "capture_context", "median", TARGET_CAPTURE_MEDIAN_MS),
        ("g", "h", "context only", "median", TARGET_CAPTURE_MEDIAN_MS),
    ]
    for column, label in (("a", "app"), ("d", "broker down"), ("e", "API down")):
        checks.append((column, "b", label, "median", TARGET_ADDED_MEDIAN_MS))
        checks.append((column, "b", label, "p99", TARGET_ADDED_P99_MS))
    for column, base, label, stat, target in checks:
        added = difference(results[column][stat], results[base][stat])
        text, ok = verdict(added, target)
        if ok is not None:
            verdicts.append(ok)
        if added is None:
            text += f" (a p99 needs {P99_MIN_SAMPLES:,} requests, {counts[column]:,} timed)"
        print(
            f"({column}) {label:<16} added {stat:<6} {cell(added, 7, '+.2f')} ms   "
            f"target <= {target} ms   {text}"
        )
    print()
    unchecked = len(checks) - len(verdicts)
    if not all(verdicts):
        print("TARGET MISSED.")
    elif unchecked:
        print(
            f"The targets checked are met; {unchecked} p99 targets not checked (too few samples)."
        )
    else:
        print("All targets met.")


@contextmanager
def on_database(url):
    """The test project's settings on ``url`` (a temporary SQLite file if None), migrated."""
    run_dir = tempfile.mkdtemp(prefix="tiktok-bench-checkout-")
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    url = url or f"sqlite:///{os.path.join(run_dir, 'bench-checkout.sqlite3')}"
    name = database_name(url, PURPOSE)
    created = False
    if is_postgres(url):
        created = create_postgres_database(url, name)
    try:
        setup_django(url, run_dir)
        yield
    finally:
        if created:
            drop_postgres_database(url, name)
            print(f"Dropped database {name}.")


def run_tag():
    """A prefix of this run's order numbers: a database kept from an earlier run has others."""
    return f"{int(time.time() * 10) % 16**6:06x}-"


def run_benchmark(args):
    from django.conf import settings

    from tiktok_tracking.client import EventsApiClient
    from tiktok_tracking.sandbox.server import SandboxServer

    run = run_tag()
    sandbox = SandboxServer().start()
    sandbox.set_latency(SANDBOX_LATENCY)
    api_client = EventsApiClient(sandbox.events_url, "bench-access-token-0123456789", timeout=5.0)
    broker_dir = str(settings.BROKER_DIR)
    times = {column: [] for column in COLUMN_LABELS}
    warnings = dict.fromkeys(times, 0)
    messages = dict.fromkeys(times, 0)
    try:
        # The columns take turns, a slice each per round, so that a machine that gets busier
        # or quieter during the run does not favour one of them.
        for round_number in range(args.rounds):
            print(f"Round {round_number + 1} of {args.rounds} ...", flush=True)
            for column in COLUMN_LABELS:
                warmups = WARMUP_ORDERS if round_number == 0 else ROUND_WARMUP_ORDERS
                if column == "c":
                    warmups = NAIVE_WARMUP_ORDERS if round_number == 0 else 1
                total = args.naive_orders if column == "c" else args.orders
                orders = share(total, args.rounds, round_number)
                prefix = f"{run}{column}-{round_number}"
                before = broker_messages(broker_dir)
                if column in dict(PAY_COLUMNS):
                    slice_times, slice_warnings = run_pay_column(
                        column, prefix, orders, warmups, api_client
                    )
                else:
                    slice_times, slice_warnings = run_page_column(column, prefix, orders, warmups)
                times[column] += slice_times
                warnings[column] += slice_warnings
                messages[column] += broker_messages(broker_dir) - before
        sandbox_requests = len(sandbox.requests)
    finally:
        api_client.close()
        sandbox.stop()
    results = {column: spread(column_times) for column, column_times in times.items()}
    effects = check_effects(
        run, {column: len(column_times) for column, column_times in times.items()}
    )
    print_report(results, effects, messages, warnings, sandbox_requests, args.rounds)


# --- the profile ----------------------------------------------------------------------------------

# What the statement list shows of a statement: no parameter, no literal, no long column list.
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NUMBER_LITERAL = re.compile(r"(?<![\w\"])\d{4,}(?![\w\"])")
_SAVEPOINT_NAME = re.compile(r'"s\d+_x\d+"')
_IDENTIFIER = r'(?:"[^"]+"\.)?"[^"]+"(?: AS "[^"]+")?'
_IDENTIFIER_LIST = re.compile(rf"{_IDENTIFIER}(?:, {_IDENTIFIER}){{3,}}")
_PLACEHOLDER_LIST = re.compile(r"%s(?:, ?%s){3,}")
_VALUES_ROWS = re.compile(r"(\(…\))(?:, \(…\))+")
# Statements longer than this are cut; each is printed wrapped at SQL_LINE characters.
SQL_WIDTH = 400
SQL_LINE = 110


def shown_sql(sql):
    """``sql`` as the profile prints it: params are never in it (placeholders only), literals
    and savepoint names elided, column lists of more than four names counted."""
    return _shown_sql(sql)


@functools.lru_cache(maxsize=1024)
def _shown_sql(sql):
    text = " ".join(sql.split())
    text = _STRING_LITERAL.sub("'…'", text)
    text = _NUMBER_LITERAL.sub("…", text)
    text = _SAVEPOINT_NAME.sub('"s…"', text)
    text = _IDENTIFIER_LIST.sub(lambda match: f"…{match.group(0).count(', ') + 1} columns…", text)
    text = _PLACEHOLDER_LIST.sub("…", text)
    text = _VALUES_ROWS.sub(r"\1, …", text)
    return text if len(text) <= SQL_WIDTH else text[: SQL_WIDTH - 1] + "…"


def code_dirs():
    """The folders whose frames tell who sent a statement: the app, the shop, Django's DB."""
    import django.db

    import tests.shop
    import tiktok_tracking

    return {
        "app": str(Path(tiktok_tracking.__file__).parent) + os.sep,
        "shop": str(Path(tests.shop.__file__).parent) + os.sep,
        "db": str(Path(django.db.__file__).parent) + os.sep,
    }


class StatementLog:
    """An execute wrapper that times each statement of the payment in progress, and the
    commits (``timed_commits``); with ``label``, who sent each statement (slower)."""

    def __init__(self, dirs):
        self.dirs = dirs
        self.label = False
        self.current = None
        self.origins = {}

    def start(self):
        self.current = {"statements": [], "commit": 0.0}

    def stop(self):
        payment, self.current = self.current, None
        return payment

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            if self.current is not None:
                # Shortened after the payment, not here: that would count as its Python time.
                self.current["statements"].append((sql, elapsed))
                if self.label:
                    self.origins.setdefault(shown_sql(sql), self.origin(sys._getframe(1)))

    def origin(self, frame):
        """The innermost caller outside Django's DB layer: the app's code or the shop's."""
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(self.dirs["app"]) and not filename.endswith("middleware.py"):
                return "app"
            if filename.startswith(self.dirs["shop"]):
                return "shop"
            frame = frame.f_back
        return "django"

    def commit(self, elapsed):
        if self.current is not None:
            self.current["commit"] += elapsed


@contextmanager
def timed_commits(log):
    """Time each COMMIT, which Django sends past the execute wrappers (connection._commit)."""
    from django.db import connections

    connection = connections["default"]
    original = connection._commit

    def _commit():
        started = time.perf_counter()
        try:
            return original()
        finally:
            log.commit(time.perf_counter() - started)

    connection._commit = _commit
    try:
        yield
    finally:
        del connection._commit


def timed_payments(column, numbers, log):
    """Pay ``numbers`` in ``column``, each timed whole and statement by statement."""
    from django.db import connection

    client = shop_client()
    payments = []
    with column_setup(column), counted_warnings(), connection.execute_wrapper(log):
        with timed_commits(log):
            for number in numbers:
                log.start()
                wall = pay(client, number) / 1000
                payment = log.stop()
                payment["wall"] = wall
                payment["database"] = (
                    sum(elapsed for _, elapsed in payment["statements"]) + payment["commit"]
                )
                payments.append(payment)
        flush_publisher(column)
    return payments


def profiled_payments(numbers):
    """Pay ``numbers`` with the app installed under cProfile (only the requests profiled)."""
    client = shop_client()
    profiler = cProfile.Profile()
    with column_setup("a"), counted_warnings():
        for number in numbers:
            profiler.enable()
            pay(client, number)
            profiler.disable()
        flush_publisher("a")
    return pstats.Stats(profiler)


def ms(seconds):
    return seconds * 1000


def statement_sequence(payments):
    """The statements most payments sent, in order, with each one's median ms; and how many
    payments sent exactly that sequence."""

    def shape_of(payment):
        return tuple(shown_sql(sql) for sql, _ in payment["statements"])

    shapes = Counter(shape_of(payment) for payment in payments)
    shape, count = shapes.most_common(1)[0]
    same = [payment for payment in payments if shape_of(payment) == shape]
    medians = [
        statistics.median(payment["statements"][index][1] for payment in same)
        for index in range(len(shape))
    ]
    commit = statistics.median(payment["commit"] for payment in same)
    return list(zip(shape, medians, strict=True)), commit, count


def short_function(key, dirs):
    filename, line, name = key
    for prefix in (dirs["app"], dirs["db"]):
        if filename.startswith(prefix):
            root = str(Path(prefix).parent.parent if prefix == dirs["db"] else Path(prefix).parent)
            shown = f"{os.path.relpath(filename, root)}:{line} {name}"
            if filename.endswith("middleware.py") and name == "__call__":
                shown += " (around the whole request)"
            return shown
    if filename == "~":
        # A built-in: cProfile names it with its address, which says nothing.
        return re.sub(r" at 0x[0-9a-f]+", "", name)
    return f"{Path(filename).name}:{line} {name}"


def print_functions(title, rows, payments, dirs):
    print(title)
    header = f"  {'cum ms':>7} {'own ms':>7} {'calls':>6}  function (ms and calls per payment)"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for key, (_, calls, own, cumulative, _) in rows:
        print(
            f"  {ms(cumulative) / payments:>7.3f} {ms(own) / payments:>7.3f} "
            f"{calls / payments:>6.1f}  {short_function(key, dirs)}"
        )


def run_profile(args):
    dirs = code_dirs()
    run = run_tag()
    log = StatementLog(dirs)
    per_round = [share(args.orders, args.rounds, index) for index in range(args.rounds)]
    print("Warming up ...", flush=True)
    # The warm-ups also note who sends each statement (walking the stack costs time).
    log.label = True
    for column in ("b", "a"):
        warmup = capture_checkouts(make_orders(f"{run}{column}W", WARMUP_ORDERS))
        timed_payments(column, warmup, log)
    log.label = False
    payments = {"a": [], "b": []}
    print(f"Timing statements, {args.orders} payments with and without the app ...", flush=True)
    for round_number, count in enumerate(per_round):
        for column in ("a", "b"):
            numbers = capture_checkouts(make_orders(f"{run}{column}-{round_number}T", count))
            payments[column] += timed_payments(column, numbers, log)
    print(f"Profiling {args.orders} payments with the app installed ...", flush=True)
    stats = profiled_payments(capture_checkouts(make_orders(f"{run}P", args.orders)))

    print_profile_method(args)
    print_split(payments)
    print_statements(payments["a"], log.origins)
    print_cprofile(stats, args.orders, dirs)


def print_profile_method(args):
    import django

    print()
    print("Checkout profile: POST /pay/<number>/ of the test shop")
    print(f"  date       {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    python = sys.version.split()[0]
    print(f"  versions   {database_version()}; Django {django.get_version()}; Python {python}")
    print(
        f"  method     Django test Client in-process, each order's context captured first "
        f"(untimed); {args.orders} payments with the app (a)"
    )
    print(
        f"             and {args.orders} with its receiver disconnected (b) in {args.rounds} "
        "rounds, every SQL statement timed by an execute wrapper and"
    )
    print(
        "             every COMMIT by wrapping the connection's commit; then "
        f"{args.orders} more payments (a) under cProfile"
    )
    print()


def print_split(payments):
    """Statements, wall time, database and Python time per payment, with and without the app."""

    def median_ms(column, figure):
        return ms(statistics.median(figure(payment) for payment in payments[column]))

    counts = {
        column: Counter(len(payment["statements"]) for payment in payments[column])
        for column in payments
    }
    statements = {column: counts[column].most_common(1)[0][0] for column in counts}
    header = f"{'per payment (median)':<40} {'(a) app':>9} {'(b) shop':>9} {'a - b':>9}"
    print(header)
    print("-" * len(header))
    print(
        f"{'SQL statements (besides the COMMIT)':<40} {statements['a']:>9} {statements['b']:>9} "
        f"{statements['a'] - statements['b']:>+9}"
    )
    for label, figure in (
        ("wall time ms", lambda payment: payment["wall"]),
        ("in the database ms (statements + COMMIT)", lambda payment: payment["database"]),
        ("in Python ms (wall - database)", lambda p: p["wall"] - p["database"]),
    ):
        first, second = median_ms("a", figure), median_ms("b", figure)
        print(f"{label:<40} {first:>9.2f} {second:>9.2f} {first - second:>+9.2f}")
    print()
    print(
        "  Medians of each figure over the payments (the parts' medians need not add up to the "
        "whole's); the database time is"
    )
    print(
        "  the round trips as the client sees them: the server's work, the network and the "
        "driver. Python is everything else:"
    )
    print("  the test Client, Django's request handling, the shop's view and the app.")
    for column in ("a", "b"):
        if len(counts[column]) > 1:
            print(f"  statement counts seen in ({column}): {dict(sorted(counts[column].items()))}")
    print()


def print_statements(payments, origins):
    """The statements of a payment with the app, in order, each with its median time."""
    from django.db import connection

    sequence, commit, same = statement_sequence(payments)
    print(
        f"SQL statements of a payment with the app (a), in order: {len(sequence)} and the COMMIT "
        f"(sent thus by {same} of {len(payments)} payments)"
    )
    print(
        "params elided (placeholders as Django sends them), literals as '…', long column "
        "lists counted; ms: median"
    )
    print(f"  {'#':>2} {'by':<6} {'ms':>6}  statement")
    print("  " + "-" * (SQL_LINE + 18))
    for index, (sql, elapsed) in enumerate(sequence, 1):
        first, *rest = textwrap.wrap(sql, SQL_LINE, break_on_hyphens=False) or [""]
        print(f"  {index:>2} {origins.get(sql, '?'):<6} {ms(elapsed):>6.3f}  {first}")
        for line in rest:
            print(f"  {'':>2} {'':<6} {'':>6}    {line}")
    print(f"  {'':>2} {'shop':<6} {ms(commit):>6.3f}  COMMIT (the shop's transaction)")
    by_origin = Counter(origins.get(sql, "?") for sql, _ in sequence)
    app_ms = sum(ms(elapsed) for sql, elapsed in sequence if origins.get(sql) == "app")
    print(
        "  by sender: "
        + ", ".join(f"{origin} {count}" for origin, count in by_origin.items())
        + f"; the app's statements take {app_ms:.3f} ms (sum of their medians)"
    )
    if connection.vendor == "postgresql":
        print(
            "  (psycopg sends the transaction's BEGIN itself, with no execute: its round trip "
            "is in statement 1's time)"
        )
    print()


def print_cprofile(stats, payments, dirs):
    """The app's functions and Django's DB layer by cumulative time, any code by own time."""
    entries = stats.stats

    def top(under, count):
        rows = [(key, value) for key, value in entries.items() if key[0].startswith(under)]
        return sorted(rows, key=lambda item: item[1][3], reverse=True)[:count]

    print(
        f"Under cProfile: {payments} payments (a), {ms(stats.total_tt) / payments:.2f} ms each "
        "(cProfile slows Python down; compare functions with each other, not with the wall "
        "times above)"
    )
    print()
    title = "The app's functions (tiktok_tracking/), by cumulative time"
    print_functions(title, top(dirs["app"], 20), payments, dirs)
    print()
    title = "Django's DB layer (django/db/), by cumulative time"
    print_functions(title, top(dirs["db"], 15), payments, dirs)
    print()
    own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:12]
    print_functions("Any code, by own time", own, payments, dirs)


def main(argv=None):
    args = parse_args(argv)
    with on_database(args.database_url):
        if args.profile:
            run_profile(args)
        else:
            run_benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
