"""Workers at a distance: delivery and the checkout with 5 and 20 ms between them and PostgreSQL.

A latency proxy (``tests.latency_proxy``, a process of its own per service) puts a round trip
between the workers and both PostgreSQL and Redis, as when they run on other hosts or in
another zone. Each drain is ``bench.delivery``'s: due events seeded in the outbox, real solo
workers, the sandbox answering after 50 ms, every event checked to arrive once. The loopback
drain runs in the same run, so the ratios compare like with like. The checkout's payment is
timed through the same proxy, with the app's receiver and without it.

    python -m bench.distance                       # prints the figures
    python -m bench.distance --write BENCHMARKS.md # and puts the table in that file
"""

import argparse
import os
import re
import statistics
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from bench.common import (
    SandboxProcess,
    cpu_seconds,
    flush_broker,
)
from bench.delivery import (
    BATCH_SIZE,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    SANDBOX_LATENCY,
    Drain,
    mb,
    outbox_database,
    redis_database,
    run_drain,
    verdict,
    versions,
)

PURPOSE = "truncates its tracking tables and writes orders into it"
DEFAULT_EVENTS = 20_000
DEFAULT_DISTANCES = (5, 20)
DEFAULT_FAR_WORKERS = 4
DEFAULT_PAYMENTS = 100
PAYMENT_WARMUPS = 5
TARGET_NEAR_SHARE = 0.70
TARGET_FAR_SCALE = 3.0
# The part of BENCHMARKS.md that --write replaces.
BEGIN_MARK = "<!-- bench.distance: begin -->"
END_MARK = "<!-- bench.distance: end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.distance",
        description="Delivery's events per second and the checkout's cost with workers "
        "5 and 20 ms from PostgreSQL and Redis (a latency proxy), beside loopback.",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        help=f"events per worker in each drain (default {DEFAULT_EVENTS:,})",
    )
    parser.add_argument(
        "--distances",
        default=",".join(map(str, DEFAULT_DISTANCES)),
        help="round trips to add, in ms, comma-separated; the last is where the scale-out "
        "drain runs (default 5,20)",
    )
    parser.add_argument(
        "--far-workers",
        type=int,
        default=DEFAULT_FAR_WORKERS,
        help=f"workers of the scale-out drain at the last distance (default {DEFAULT_FAR_WORKERS})",
    )
    parser.add_argument(
        "--payments",
        type=int,
        default=DEFAULT_PAYMENTS,
        help=f"payments timed with and without the app at each distance (default "
        f"{DEFAULT_PAYMENTS}; 0 skips them)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL database whose name contains 'bench' (default $BENCH_DATABASE_URL "
        f"or {DEFAULT_DATABASE_URL}); created if missing, dropped after if this run made it",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"Celery broker (default {DEFAULT_REDIS_URL}); flushed before each drain, so "
        "not database 0",
    )
    parser.add_argument(
        "--write",
        metavar="PATH",
        help=f"put the table between {BEGIN_MARK} and {END_MARK} in PATH (BENCHMARKS.md)",
    )
    args = parser.parse_args(argv)
    try:
        args.distances = [float(value) for value in args.distances.split(",")]
    except ValueError:
        parser.error("--distances takes milliseconds separated by commas, e.g. 5,20")
    if not args.distances or min(args.distances) <= 0:
        parser.error("--distances needs at least one round trip, each above 0 ms")
    if args.events < BATCH_SIZE:
        parser.error(f"--events must be at least {BATCH_SIZE}")
    if args.far_workers < 2 or args.payments < 0:
        parser.error("--far-workers must be at least 2, --payments at least 0")
    if not args.redis_url.startswith("redis://") or redis_database(args.redis_url) == 0:
        parser.error("--redis-url must be redis://host:port/<n> with n other than 0")
    if args.write and not Path(args.write).is_file():
        parser.error(f"--write: no file {args.write}")
    # What bench.delivery's drain reads from its own arguments.
    args.same_due_time = False
    return args


@contextmanager
def at_distance(args, rtt_ms):
    """Proxies to PostgreSQL and Redis adding ``rtt_ms``: the URLs the workers use."""
    from tests.latency_proxy import LatencyProxyProcess, upstream_of

    proxies = []
    try:
        proxies.append(LatencyProxyProcess(upstream_of(args.database_url, 5432), rtt_ms / 1000))
        proxies.append(LatencyProxyProcess(upstream_of(args.redis_url, 6379), rtt_ms / 1000))
        database, broker = proxies
        yield (
            database.url_for(args.database_url),
            broker.url_for(args.redis_url),
            database.port,
            [proxy.pid for proxy in proxies],
        )
    finally:
        for proxy in proxies:
            proxy.close()


def payment_statements():
    """The SQL statements of one payment, without the app and with it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench.checkout import capture_checkouts, column_setup, make_orders, pay, shop_client

    counts = {}
    for column in ("b", "a"):
        [number] = capture_checkouts(make_orders(f"S{column}", 1))
        with column_setup(column), CaptureQueriesContext(connection) as captured:
            pay(shop_client(), number)
        counts[column] = len(captured)
    return counts["b"], counts["a"]


def time_payments(label, payments):
    """Median ms of a payment without the app and with it, ``payments`` of each in turns."""
    from bench.checkout import run_pay_column

    without, with_app = [], []
    for round_number in range(2):
        half = payments // 2
        prefix = re.sub(r"[^A-Za-z0-9]", "", label)
        without += run_pay_column("b", f"{prefix}b{round_number}", half, PAYMENT_WARMUPS, None)[0]
        with_app += run_pay_column("a", f"{prefix}a{round_number}", half, PAYMENT_WARMUPS, None)[0]
    return statistics.median(without), statistics.median(with_app)


def drain_at(args, run_dir, sandbox, label, workers, urls=None, proxy_pids=()):
    """One drain, of ``--events`` per worker, so that each worker sends as many batches as
    the single worker does and starting and stopping weigh the same; the proxies' CPU seconds
    meanwhile go in the drain's figures."""
    drain = Drain(label, args.events * workers, workers, BATCH_SIZE)
    database_url, broker_url = urls or (None, None)
    before = sum(cpu_seconds(pid) or 0.0 for pid in proxy_pids)
    run_drain(
        args,
        run_dir,
        sandbox,
        drain,
        worker_database_url=database_url,
        worker_broker_url=broker_url,
    )
    drain.cpu_proxies = sum(cpu_seconds(pid) or 0.0 for pid in proxy_pids) - before
    return drain


def measure(args, run_dir, sandbox):
    """Every drain and payment timing: ``(rows, payments)``."""
    from tests.latency_proxy import django_connection_through

    rows = []  # (distance ms, drain)
    payments = []  # (distance ms, median without, median with)
    rows.append((0.0, drain_at(args, run_dir, sandbox, "loopback, 1 worker", 1)))
    # The scale-out drain's workers with no distance: what this machine's cores allow them.
    label = f"loopback, {args.far_workers} workers"
    rows.append((0.0, drain_at(args, run_dir, sandbox, label, args.far_workers)))
    if args.payments:
        payments.append((0.0, *time_payments("loopback", args.payments)))
    for rtt in args.distances:
        with at_distance(args, rtt) as (database_url, broker_url, database_port, pids):
            urls = (database_url, broker_url)
            label = f"{rtt:g} ms, 1 worker"
            rows.append((rtt, drain_at(args, run_dir, sandbox, label, 1, urls, pids)))
            if rtt == args.distances[-1]:
                for workers in sorted({2, args.far_workers}):
                    label = f"{rtt:g} ms, {workers} workers"
                    drain = drain_at(args, run_dir, sandbox, label, workers, urls, pids)
                    rows.append((rtt, drain))
            if args.payments:
                with django_connection_through(database_port):
                    payments.append((rtt, *time_payments(f"d{rtt:g}", args.payments)))
    return rows, payments


def scale_out(rows):
    """``(far, one, many, ceiling)``: the farthest distance, its drain of one worker and that
    of the most workers, and the drain of as many workers at loopback (None where not run)."""
    far = max(rtt for rtt, _ in rows)
    one = next(d for rtt, d in rows if rtt == far and d.workers == 1)
    many = max(
        (d for rtt, d in rows if rtt == far and d.workers > 1),
        key=lambda d: d.workers,
        default=None,
    )
    ceiling = None
    if many is not None:
        ceiling = next(
            (d for rtt, d in rows if rtt == 0 and d.workers == many.workers and far > 0), None
        )
    return far, one, many, ceiling


def ceiling_note(rows):
    """What the loopback drain of as many workers says about the scale-out target, or None.

    Those workers wait on no distance, so their rate is what this machine allows them: a
    multiple of one distant worker above it cannot be reached here by hiding latency.
    """
    far, one, many, ceiling = scale_out(rows)
    if many is None or ceiling is None or not ceiling.per_second:
        return None
    wanted = TARGET_FAR_SCALE * one.per_second
    busy = (
        ""
        if ceiling.machine_busy is None
        else f", with {ceiling.machine_busy:.0%} of all cores busy"
    )
    return (
        f"This machine's ceiling: {many.workers} workers at loopback reach "
        f"{ceiling.per_second:,.0f} events/s{busy}. {TARGET_FAR_SCALE:g} times one worker at "
        f"{far:g} ms would be {wanted:,.0f} events/s, "
        f"{wanted / ceiling.per_second:.0%} of that ceiling"
        + (
            "."
            if wanted <= ceiling.per_second
            else ": more than the same workers reach here with no distance at all, so no "
            "hiding of latency can get there on this machine."
        )
        + f" {many.workers} workers at {far:g} ms reach "
        f"{many.per_second / ceiling.per_second:.0%} of it: the share of the ceiling the "
        f"distance leaves them."
    )


def targets(rows):
    """``[(what, figure, target, ok)]`` of the issue's two targets, from the drains."""
    one = {rtt: drain for rtt, drain in rows if drain.workers == 1}
    loopback = one[0.0].per_second
    checks = []
    if 5.0 in one:
        share = one[5.0].per_second / loopback
        checks.append(
            (
                "1 worker at 5 ms, share of its loopback rate",
                f"{share:.0%}",
                f">= {TARGET_NEAR_SHARE:.0%}",
                share >= TARGET_NEAR_SHARE,
            )
        )
    far, one_far, many, _ = scale_out(rows)
    if many is not None:
        scale = many.per_second / one_far.per_second
        checks.append(
            (
                f"{many.workers} workers at {far:g} ms, against 1 worker there",
                f"{scale:.2f}x",
                f">= {TARGET_FAR_SCALE:g}x",
                scale >= TARGET_FAR_SCALE,
            )
        )
    return checks


def table(rows, payments, statements):
    """The figures as Markdown: one table of drains, one of payments, the targets."""
    loopback = next(d for rtt, d in rows if rtt == 0 and d.workers == 1).per_second
    lines = [
        "| round trip to PostgreSQL and Redis | workers | events/s | per worker | vs loopback, "
        "1 worker | CPU ms per 1,000 events: workers / PostgreSQL / sandbox / proxies | "
        "all cores busy | worker peak RSS | every event once |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rtt, drain in rows:
        per_thousand = 1000 * 1000 / drain.events
        spent = (drain.cpu_workers, drain.cpu_postgres, drain.cpu_sandbox, drain.cpu_proxies)
        cpu = " / ".join(f"{seconds * per_thousand:.0f}" for seconds in spent)
        busy = "n/a" if drain.machine_busy is None else f"{drain.machine_busy:.0%}"
        lines.append(
            f"| {'loopback' if rtt == 0 else f'{rtt:g} ms'} | {drain.workers} | "
            f"{drain.per_second:,.0f} | {drain.per_second / drain.workers:,.0f} | "
            f"{drain.per_second / loopback:.2f}x | {cpu} | {busy} | {mb(drain.peak_kb):.1f} MB | "
            f"{'yes' if drain.exactly_once else 'NO'} |"
        )
    if payments:
        without, with_app = statements
        lines += [
            "",
            f"| round trip to PostgreSQL | payment without the app (median) | with the app | "
            f"what the app adds ({with_app - without} statements) |",
            "|---|---|---|---|",
        ]
        for rtt, alone, with_receiver in payments:
            lines.append(
                f"| {'loopback' if rtt == 0 else f'{rtt:g} ms'} | {alone:.2f} ms | "
                f"{with_receiver:.2f} ms | +{with_receiver - alone:.2f} ms |"
            )
    lines += ["", "| target | measured | target | |", "|---|---|---|---|"]
    for what, figure, target, ok in targets(rows):
        lines.append(f"| {what} | {figure} | {target} | {verdict(ok)} |")
    note = ceiling_note(rows)
    if note:
        lines += ["", note]
    return "\n".join(lines)


def write_into(path, text, header):
    """Replace what lies between the markers in ``path`` with ``header`` and ``text``."""
    content = Path(path).read_text()
    begin, end = content.find(BEGIN_MARK), content.find(END_MARK)
    if begin < 0 or end < begin:
        sys.exit(f"--write: {path} has no {BEGIN_MARK} ... {END_MARK} block")
    block = f"{BEGIN_MARK}\n{header}\n\n{text}\n{END_MARK}"
    Path(path).write_text(content[:begin] + block + content[end + len(END_MARK) :])


def main(argv=None):
    args = parse_args(argv)
    with outbox_database(args.database_url, PURPOSE, prefix="tiktok-bench-distance-") as run_dir:
        from tiktok_tracking import conf

        # TikTok's stand-in in a process of its own: validating several 1,000-event requests at
        # once in this process would hold this process's interpreter lock, and the requests.
        sandbox = SandboxProcess(token=conf.require("ACCESS_TOKEN"), latency=SANDBOX_LATENCY)
        try:
            statements = payment_statements()
            rows, payments = measure(args, run_dir, sandbox)
        finally:
            sandbox.stop()
            flush_broker(args.redis_url)
        header = (
            f"`python -m bench.distance{' --write ' + args.write if args.write else ''}`, "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {versions()}; "
            f"{os.cpu_count()} cpus shared by PostgreSQL, Redis, the proxies, the sandbox "
            f"and the workers. {args.events:,} due events per worker in each drain, batches of "
            f"{BATCH_SIZE}, "
            f"the sandbox answering after {SANDBOX_LATENCY * 1000:.0f} ms; payments: "
            f"{args.payments} with and {args.payments} without the app at each distance."
        )
        text = table(rows, payments, statements)
        print()
        print(header)
        print()
        print(text)
        failed = [drain for _, drain in rows if not drain.exactly_once]
        for drain in failed:
            print(
                f"FAIL {drain.label}: {drain.duplicates} duplicate(s), {drain.missing} missing, "
                f"{drain.unexpected} unexpected, rows by status {drain.statuses}"
            )
        if args.write and not failed:
            write_into(args.write, text, header)
            print(f"\nWritten into {args.write}.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
