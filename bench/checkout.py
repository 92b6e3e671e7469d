"""Checkout: what the app adds to the shop's payment confirmation, against a naive integration."""

import argparse
import atexit
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone

from bench.common import (
    create_postgres_database,
    database_name,
    drop_postgres_database,
    is_postgres,
    make_orders,
    setup_django,
)

# Why the benchmark refuses databases not named for it.
PURPOSE = "writes orders and events into it"
DEFAULT_ORDERS = 300
WARMUP_ORDERS = 10
# The columns take turns in this many rounds; after the first, each slice warms up briefly.
ROUNDS = 5
ROUND_WARMUP_ORDERS = 3
# How long the publisher may take, after a column, to publish (or fail to publish) its wake-ups:
# with the broker down each attempt waits out Celery's connection timeout.
PUBLISH_FLUSH_SECONDS = 60
SANDBOX_LATENCY = 0.3
TARGET_ADDED_MEDIAN_MS = 2
TARGET_ADDED_P99_MS = 5
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"
# Nothing listens on port 9 (discard): TikTok unreachable.
UNREACHABLE_API_URL = "http://127.0.0.1:9/open_api/v1.3/event/track/"
DISPATCH_UID = "tiktok_tracking.on_payment_completed"
NAIVE_DISPATCH_UID = "bench.checkout.naive"
COLUMNS = (
    ("a", "app installed"),
    ("b", "receiver disconnected"),
    ("c", "naive: sync POST"),
    ("d", "app, broker down"),
    ("e", "app, API down"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.checkout",
        description="Time the test shop's /pay/<number>/ view with and without the app.",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=DEFAULT_ORDERS,
        help=f"timed pay requests per column (default {DEFAULT_ORDERS})",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="database to use (default: a temporary SQLite file), e.g. "
        "postgres://postgres@127.0.0.1:5432/tiktok_bench_checkout; its name must contain "
        "'bench'. A PostgreSQL database is created if missing and then dropped afterwards",
    )
    args = parser.parse_args(argv)
    if args.orders < ROUNDS * 10:
        parser.error(f"--orders must be at least {ROUNDS * 10}")
    return args


# --- database and Django ------------------------------------------------------------------------


# --- the four ways the payment can be confirmed -------------------------------------------------


def naive_receiver(api_client):
    """A receiver posting the purchase to TikTok inside the request, as a first attempt would."""
    from tiktok_tracking import conf
    from tiktok_tracking.adapters import get_adapter_class
    from tiktok_tracking.context import context_from_request
    from tiktok_tracking.events import build_event, build_request_body, read_order

    def on_payment_completed(sender, order, request=None, **kwargs):
        facts = read_order(get_adapter_class(conf.get("ORDER_ADAPTER"))(order))
        context = context_from_request(request) if request is not None else None
        item = build_event("Purchase", facts, event_time=time.time(), context=context)
        api_client.send(build_request_body(conf.get("PIXEL_ID"), [item]))

    return on_payment_completed


@contextmanager
def column_setup(column, api_client):
    """Connect the receivers (and break the broker or the API) that ``column`` measures."""
    from django.conf import settings

    from tests.celery_app import app
    from tiktok_tracking.receivers import on_payment_completed
    from tiktok_tracking.signals import payment_completed

    def reset_pools():
        # Celery caches its connection and producer pools; drop them so the URL change counts.
        app._pool = None
        app.amqp._producer_pool = None

    saved_write_url = app.conf.get("broker_write_url")
    saved_tracking = settings.TIKTOK_TRACKING
    naive = naive_receiver(api_client)
    if column in ("b", "c"):
        payment_completed.disconnect(dispatch_uid=DISPATCH_UID)
    if column == "c":
        payment_completed.connect(naive, dispatch_uid=NAIVE_DISPATCH_UID, weak=False)
    if column == "d":
        app.conf.broker_write_url = UNREACHABLE_BROKER
        reset_pools()
    if column == "e":
        settings.TIKTOK_TRACKING = {**saved_tracking, "API_URL": UNREACHABLE_API_URL}
    try:
        yield
    finally:
        settings.TIKTOK_TRACKING = saved_tracking
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


class CountingHandler(logging.Handler):
    """Counts the app's enqueue warnings instead of printing a traceback per request."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += 1


@contextmanager
def counted_warnings():
    loggers = [logging.getLogger(f"tiktok_tracking.{name}") for name in ("receivers", "publisher")]
    handler = CountingHandler()
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield handler
    finally:
        for logger, propagate in zip(loggers, saved, strict=True):
            logger.propagate = propagate
            logger.removeHandler(handler)


def capture_checkouts(numbers):
    """What the checkout page does before the payment (untimed): the browser context stored."""
    from django.test import RequestFactory

    from tests.shop.models import Order
    from tiktok_tracking.context import capture_context

    factory = RequestFactory()
    for order in Order.objects.filter(number__in=numbers):
        request = factory.post(
            "/checkout/?ttclid=bench-click",
            HTTP_USER_AGENT="Mozilla/5.0 (bench)",
            REMOTE_ADDR="203.0.113.7",
        )
        request.COOKIES.update({"country": "US", "_ttp": "bench-ttp"})
        capture_context(request, order)
    return numbers


def run_column(column, slice_name, orders, warmups, api_client):
    """Warm up, then time one pay request per fresh order; returns the times and warnings."""
    from django.test import Client

    from tiktok_tracking.publisher import publisher

    client = Client()
    # The shop's country switch: a US visitor, whose purchase the consent policy lets through.
    client.cookies["country"] = "US"
    warmup = capture_checkouts(make_orders(f"W{slice_name}", warmups))
    timed = capture_checkouts(make_orders(f"T{slice_name}", orders))
    with column_setup(column, api_client), counted_warnings() as warnings:
        for number in warmup:
            pay(client, number)
        times = [pay(client, number) for number in timed]
        # The wake-ups go out on the publisher's thread: let them meet this column's broker.
        if not publisher.flush(timeout=PUBLISH_FLUSH_SECONDS):
            sys.exit(f"column {column}: the publisher did not finish")
    return times, warnings.count


# --- the report ---------------------------------------------------------------------------------


def figures(times):
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {"median": statistics.median(times), "p95": cuts[94], "p99": cuts[98]}


def check_effects(counts):
    """What each column left behind: every order paid, and the app's rows and messages."""
    from tests.shop.models import Order
    from tiktok_tracking.models import TrackedEvent

    effects = {}
    for column, _ in COLUMNS:
        numbers = Order.objects.filter(number__startswith=f"T{column}-")
        effects[column] = {
            "paid": numbers.filter(paid=True).count(),
            "rows": TrackedEvent.objects.filter(
                order_id__startswith=f"T{column}-", event="Purchase"
            ).count(),
        }
        if effects[column]["paid"] != counts[column]:
            sys.exit(f"column {column}: {effects[column]['paid']} of {counts[column]} orders paid")
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


def print_report(results, effects, messages, counts, warnings, sandbox_requests):
    import django

    print()
    print("Checkout: POST /pay/<number>/ of the test shop")
    print(f"  date       {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    python = sys.version.split()[0]
    print(f"  versions   {database_version()}; Django {django.get_version()}; Python {python}")
    print(
        f"  method     Django test Client in-process, {counts['a']} timed requests per column, "
        f"each for a fresh unpaid order, in {ROUNDS} rounds"
    )
    print(
        f"             where the columns take turns ({WARMUP_ORDERS} warm-ups per column, "
        f"then {ROUND_WARMUP_ORDERS} per slice)"
    )
    print(f"  sandbox    answers after {SANDBOX_LATENCY * 1000:.0f} ms (column c only)")
    print("  broker     filesystem transport, no worker: the messages pile up (d: broker down)")
    print("  API        (e): TikTok unreachable (nothing listens on the API URL)")
    print(
        f"  target     app adds <= {TARGET_ADDED_MEDIAN_MS} ms median, "
        f"<= {TARGET_ADDED_P99_MS} ms p99 (a - b)"
    )
    print()
    header = (
        f"{'column':<26} {'median ms':>9} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'vs b med':>8} {'vs b p99':>8} {'events':>6}"
    )
    print(header)
    print("-" * len(header))
    base = results["b"]
    for column, label in COLUMNS:
        result = results[column]
        print(
            f"{'(' + column + ') ' + label:<26} {result['median']:>9.2f} {result['p95']:>8.2f} "
            f"{result['p99']:>8.2f} {result['median'] - base['median']:>+8.2f} "
            f"{result['p99'] - base['p99']:>+8.2f} {effects[column]['rows']:>6}"
        )
    print()
    print(
        f"  broker messages published (a): {messages['a']} for {counts['a']} timed orders and "
        "their warm-ups (wake-ups waiting together are published as one)"
    )
    print(f"  broker messages published (d): {messages['d']} (broker down: none expected)")
    print(f"  enqueue failures logged (d):   {warnings['d']} (the sweeper delivers those events)")
    print(f"  broker messages published (e): {messages['e']}")
    print(f"  sandbox requests received (c): {sandbox_requests}")
    print()
    verdicts = []
    for column, label in (("a", "app"), ("d", "broker down"), ("e", "API down")):
        for what, stat, target in (
            ("median", "median", TARGET_ADDED_MEDIAN_MS),
            ("p99", "p99", TARGET_ADDED_P99_MS),
        ):
            added = results[column][stat] - base[stat]
            ok = added <= target
            verdicts.append(ok)
            print(
                f"({column}) {label:<12} added {what:<6} {added:+7.2f} ms   "
                f"target <= {target} ms   {'ok' if ok else 'MISS'}"
            )
    print()
    print("All targets met." if all(verdicts) else "TARGET MISSED.")


def main(argv=None):
    args = parse_args(argv)
    run_dir = tempfile.mkdtemp(prefix="tiktok-bench-checkout-")
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    url = args.database_url or f"sqlite:///{os.path.join(run_dir, 'bench-checkout.sqlite3')}"
    name = database_name(url, PURPOSE)
    created = False
    if is_postgres(url):
        created = create_postgres_database(url, name)
    try:
        setup_django(url, run_dir)
        from django.conf import settings

        from tiktok_tracking.client import EventsApiClient
        from tiktok_tracking.sandbox.server import SandboxServer

        sandbox = SandboxServer().start()
        sandbox.set_latency(SANDBOX_LATENCY)
        api_client = EventsApiClient(
            sandbox.events_url, "bench-access-token-0123456789", timeout=5.0
        )
        broker_dir = str(settings.BROKER_DIR)
        times = {column: [] for column, _ in COLUMNS}
        warnings = dict.fromkeys(times, 0)
        messages = dict.fromkeys(times, 0)
        try:
            # The columns take turns, a slice each per round, so that a machine that gets
            # busier or quieter during the run does not favour one of them.
            for round_number in range(ROUNDS):
                print(f"Round {round_number + 1} of {ROUNDS} ...", flush=True)
                for column, _ in COLUMNS:
                    before = broker_messages(broker_dir)
                    slice_times, slice_warnings = run_column(
                        column,
                        f"{column}-{round_number}",
                        args.orders // ROUNDS,
                        WARMUP_ORDERS if round_number == 0 else ROUND_WARMUP_ORDERS,
                        api_client,
                    )
                    times[column] += slice_times
                    warnings[column] += slice_warnings
                    messages[column] += broker_messages(broker_dir) - before
            results = {column: figures(column_times) for column, column_times in times.items()}
            counts = {column: len(column_times) for column, column_times in times.items()}
            sandbox_requests = len(sandbox.requests)
        finally:
            api_client.close()
            sandbox.stop()
        effects = check_effects(counts)
        print_report(results, effects, messages, counts, warnings, sandbox_requests)
    finally:
        if created:
            drop_postgres_database(url, name)
            print(f"Dropped database {name}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
