"""Soak: checkout with and without the app, side by side, at a steady rate for minutes."""

import argparse
import gc
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from bench.common import (
    SandboxProcess,
    child_environment,
    cpu_seconds,
    flush_broker,
    make_orders,
    run_on_postgres,
)
from bench.latency import (
    WITHOUT_APP_ENV,
    WITHOUT_APP_READY,
    LoadGenerator,
    WsgiServerProcess,
    add_run_arguments,
    analyse,
    check_run_arguments,
    ms_text,
    paid_orders,
    percentile,
    sandbox_receipts,
    seconds_text,
    server_text,
    unfinished_rows,
    versions,
    wait_for_deliveries,
    wait_for_warmup,
    with_conn_max_age,
)

# Why the benchmark refuses databases not named for it.
PURPOSE = "writes orders and events into it"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tiktok_bench_soak"
# Not latency's database 6: both benchmarks flush theirs, and may run side by side.
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/7"
DEFAULT_RATE = 100.0
DEFAULT_SECONDS = 300.0
DEFAULT_BLOCK_SECONDS = 30.0
# Warm-up orders per server: at least this many, and two per client thread, so that every
# thread has opened its connection (and the server its thread and database connection).
WARMUP_ORDERS = 20
TARGET_ADDED_P99_MS = 5
# Lines of a server's log shown when its requests failed.
LOG_TAIL_LINES = 30
# A short lead so that a block's first requests are not already late when it is submitted.
BLOCK_LEAD = 0.2
SERVERS = (
    ("A", "app installed"),
    ("B", "receiver disconnected"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Pay orders at a steady rate for minutes through two WSGI servers taking "
        "turns, one with the app and one without, with a live Celery worker and beat; compare "
        "their checkout times and check that every Purchase reached the TikTok sandbox once.",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"orders paid per second (default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"seconds of load each server gets in all (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--block-seconds",
        type=float,
        default=DEFAULT_BLOCK_SECONDS,
        help=f"seconds of load per turn before the other server's (default "
        f"{DEFAULT_BLOCK_SECONDS:g}); as long as --seconds gives one continuous phase each",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"PostgreSQL database to use (default {DEFAULT_DATABASE_URL}); its name must "
        "contain 'bench'. It is created if missing and dropped at the end unless --keep",
    )
    add_run_arguments(parser, broker_url=DEFAULT_BROKER_URL, per_server=" per server")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.block_seconds <= 0:
        parser.error("--rate, --seconds and --block-seconds must be positive")
    if round(args.rate * args.block_seconds) < 1:
        parser.error("--rate times --block-seconds must make at least one order per block")
    if round(args.rate * args.seconds) > 99_999:
        # make_orders numbers orders with five digits.
        parser.error("--rate times --seconds must stay below 100,000 orders per server")
    check_run_arguments(parser, args)
    return args


# --- the load: one block at a time, on connections kept for the whole run ----------------------


class BlockLoad(LoadGenerator):
    """The latency benchmark's open-loop load, run one block at a time on threads kept all along.

    Each thread keeps its HTTP connection from one block to the next, and so the server keeps
    the connection's thread and its database connection, as behind a proxy that keeps its
    upstream connections alive: a block starting cold would time connection set-ups.
    """

    def __init__(self, port, rate, threads, name):
        super().__init__(port, rate, threads)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"pay-{name}")

    def run(self, numbers):
        start = time.monotonic() + BLOCK_LEAD
        futures = [
            self._pool.submit(self.pay, number, start + index / self.rate)
            for index, number in enumerate(numbers)
        ]
        return [future.result() for future in futures]

    def close(self):
        self._pool.shutdown(wait=True)


def split_blocks(numbers, size):
    return [numbers[start : start + size] for start in range(0, len(numbers), size)]


# --- what the processes, the database and the sandbox show --------------------------------------


def memory_kb(pid, field):
    """``field`` (VmRSS, VmHWM) of process ``pid`` in kB, from /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def process_family(pid):
    """``pid`` and its child processes (a prefork server's workers), from /proc."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(child) for child in children)]


def family_cpu_seconds(pid):
    """CPU seconds of ``pid`` and its children; None once ``pid`` is gone."""
    used = [cpu_seconds(member) for member in process_family(pid)]
    return None if used[0] is None else sum(seconds for seconds in used if seconds is not None)


def sample_memory(processes, field="VmRSS"):
    """The largest ``field`` among each process and its children (a prefork server's workers)."""
    sizes = {}
    for label, process in processes.items():
        found = [memory_kb(member, field) for member in process_family(process.pid)]
        found = [size for size in found if size is not None]
        sizes[label] = max(found) if found else None
    return sizes


def machine_ticks():
    """(busy, total) clock ticks of all cores so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is already counted in user.
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


class CpuMeter:
    """CPU used by each watched process and by the whole machine, per server's blocks."""

    def __init__(self, pids):
        self.pids = pids
        self.used = {}
        self.wall = {}
        self.machine = {}

    def sample(self):
        return (
            time.monotonic(),
            machine_ticks(),
            {label: family_cpu_seconds(pid) for label, pid in self.pids.items()},
        )

    def add(self, name, before, after):
        """Count the CPU between two samples towards server ``name``'s blocks."""
        self.wall[name] = self.wall.get(name, 0.0) + after[0] - before[0]
        busy, total = self.machine.get(name, (0, 0))
        self.machine[name] = (busy + after[1][0] - before[1][0], total + after[1][1] - before[1][1])
        used = self.used.setdefault(name, {})
        for label, start in before[2].items():
            end = after[2][label]
            if start is not None and end is not None:
                used[label] = used.get(label, 0.0) + end - start

    def core_percent(self, name, label):
        """Share of one core the process used during ``name``'s blocks."""
        if label not in self.used.get(name, {}) or not self.wall.get(name):
            return None
        return 100 * self.used[name][label] / self.wall[name]

    def machine_percent(self, name):
        busy, total = self.machine.get(name, (0, 0))
        return 100 * busy / total if total else None


def checkout_spread(payments):
    """Percentiles of the pay requests' round trips (sent -> whole answer read), in seconds."""
    times = [payment.answered - payment.sent for payment in payments]
    return {
        name: percentile(times, fraction)
        for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
    }


def sent_rate(blocks):
    """Requests per second as sent, over the blocks' own spans (the other server's not counted)."""
    intervals, span = 0, 0.0
    for payments in blocks:
        if len(payments) > 1:
            sent = [payment.sent for payment in payments]
            intervals += len(payments) - 1
            span += max(sent) - min(sent)
    return intervals / span if span else 0.0


def without_app_effects(prefix, records):
    """What the server without the app left: outbox rows of its orders, their sandbox events."""
    from tests.shop.models import Order
    from tiktok_tracking.events import event_id_for
    from tiktok_tracking.models import TrackedEvent

    rows = TrackedEvent.objects.filter(order_id__startswith=prefix).count()
    orders = Order.objects.filter(number__startswith=prefix).values_list("number", flat=True)
    event_ids = {event_id_for("Purchase", number) for number in orders}
    events = 0
    # Every request counts, accepted or refused: none of these orders may reach TikTok at all.
    for record in records:
        body = record["body"] if isinstance(record["body"], dict) else {}
        for item in body.get("data") or ():
            if isinstance(item, dict) and item.get("event_id") in event_ids:
                events += 1
    return {
        "rows": rows,
        "events": events,
    }


# --- the report ---------------------------------------------------------------------------------


def mb_text(kb):
    return "-" if kb is None else f"{kb / 1024:.1f} MB"


def percent_text(value):
    return "-" if value is None else f"{value:.0f}%"


def growth_text(start, end):
    return "-" if start is None or end is None else f"{(end - start) / 1024:+.1f} MB"


def print_method(args, plan, warmups):
    from tiktok_tracking import conf

    print()
    print("Soak: POST /pay/<number>/ with and without the app, side by side")
    print(f"  date       {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"  versions   {versions()}")
    print(
        f"  load       {plan['orders']:,} orders per server at {args.rate:g}/s = "
        f"{args.seconds:g} s of load each, open loop ({args.client_threads} client threads and "
        "kept-alive connections per server), each order fresh and created before the clock"
    )
    if plan["rounds"] > 1:
        print(
            f"  blocks     {plan['rounds']} blocks of up to {args.block_seconds:g} s per server, "
            "taking turns A, B, A, B ...: A's load comes in blocks, not as one continuous "
            f"{args.seconds:g} s phase (--block-seconds {args.seconds:g} gives one phase each)"
        )
    else:
        print(f"  blocks     one continuous {args.seconds:g} s phase each, A then B")
    database = (
        f"kept for {args.conn_max_age} s (CONN_MAX_AGE)"
        if args.conn_max_age
        else "one per request (CONN_MAX_AGE 0)"
    )
    print(
        "  servers    A: the app as configured; B: the same with the app's payment_completed "
        "receiver disconnected at start (the shop alone; the middleware stays)"
    )
    print(f"             each {server_text(args)}")
    print(f"             database connections {database}; one PostgreSQL database")
    print(
        f"  delivery   1 Celery worker (solo pool) and beat sweeping every "
        f"{conf.get('SWEEP_INTERVAL')} s, on Redis, for the whole run; the sandbox, in a "
        f"process of its own, answers after {args.sandbox_latency * 1000:.0f} ms"
    )
    print(
        f"  warm-up    {warmups} orders per server paid (A's delivered) before the clock, through "
        "the load's own threads"
    )
    print(
        "  checkout   the pay request's round trip as the load generator saw it (sent -> whole "
        "answer read)"
    )


def print_report(args, plan, warmups, figures):
    print_method(args, plan, warmups)
    a, b = figures["A"], figures["B"]
    print()
    header = f"{'orders':<34} {'A (app)':>18} {'B (without)':>18}"
    print(header)
    print("-" * len(header))
    rows = (
        ("paid", f"{a['paid']:,} of {plan['orders']:,}", f"{b['paid']:,} of {plan['orders']:,}"),
        ("HTTP failures", f"{len(a['failed'])}", f"{len(b['failed'])}"),
        ("sent rate", f"{a['rate']:.1f}/s", f"{b['rate']:.1f}/s"),
        ("start behind plan p99", ms_text(a["lag"]["p99"]), ms_text(b["lag"]["p99"])),
        ("start behind plan max", ms_text(a["lag"]["max"]), ms_text(b["lag"]["max"])),
    )
    for label, left, right in rows:
        print(f"{label:<34} {left:>18} {right:>18}")
    for name in ("A", "B"):
        for payment in figures[name]["failed"][:5]:
            print(f"  {name} failed: {payment.number}: {payment.outcome}")

    print()
    header = f"{'checkout (POST /pay/)':<34} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9}"
    print(header)
    print("-" * len(header))
    for name, label in SERVERS:
        spread = figures[name]["checkout"]
        print(
            f"{name + ' ' + label:<34} "
            + " ".join(f"{ms_text(spread[key]):>9}" for key in ("p50", "p95", "p99", "max"))
        )
    added = {key: a["checkout"][key] - b["checkout"][key] for key in ("p50", "p95", "p99", "max")}
    print(
        f"{'A - B':<34} "
        + " ".join(f"{added[key] * 1000:>+6.1f} ms" for key in ("p50", "p95", "p99", "max"))
    )
    # Block by block, so that a noisy stretch of the machine shows as the outlier it is.
    for name, _ in SERVERS:
        by_block = " ".join(f"{p99 * 1000:.1f}" for p99 in figures[name]["block_p99"])
        print(f"  p99 ms by block, {name}: {by_block}")

    print()
    print("Delivery (A)")
    delivery = figures["delivery"]
    missing = len(delivery["missing"]) + len(delivery["without_row"])
    print(
        f"  Purchases received   {delivery['received']:,} of {delivery['paid']:,} paid orders; "
        f"missing {missing}, duplicated {len(delivery['duplicated'])}, refused by the sandbox "
        f"{delivery['refused']}"
    )
    if delivery["without_row"]:
        print(f"  paid without a row   {len(delivery['without_row'])}")
    for label, numbers in (
        ("missing", delivery["missing"]),
        ("duplicated", delivery["duplicated"]),
    ):
        if numbers:
            print(f"  {label:<20} e.g. {', '.join(numbers[:5])}")
    statuses = ", ".join(
        f"{status} {count:,}" for status, count in sorted(delivery["statuses"].items())
    )
    print(f"  outbox rows          {statuses or 'none'}")
    print(f"  left pending/sending {figures['unfinished']}")
    latency = delivery["from_commit"]
    print(
        f"  commit -> TikTok     p50 {seconds_text(latency['p50'])}, p99 "
        f"{seconds_text(latency['p99'])}, max {seconds_text(latency['max'])}"
    )
    per_request = delivery["received"] / figures["requests"] if figures["requests"] else 0
    print(f"  track requests       {figures['requests']:,} ({per_request:.1f} events per request)")
    print(f"  settled              {figures['waited']:.1f} s after the last answer")

    print()
    print("Without the app (B)")
    print(f"  outbox rows          {figures['without_app']['rows']} (none expected)")
    print(f"  sandbox events       {figures['without_app']['events']} (none expected)")

    print()
    meter = figures["cpu"]
    header = f"{'CPU during the blocks (% of a core)':<38} {'A blocks':>10} {'B blocks':>10}"
    print(header)
    print("-" * len(header))
    for label in meter.pids:
        print(
            f"{label:<38} "
            + " ".join(f"{percent_text(meter.core_percent(name, label)):>10}" for name in "AB")
        )
    print(
        f"{f'machine (% of all {os.cpu_count()} cores)':<38} "
        + " ".join(f"{percent_text(meter.machine_percent(name)):>10}" for name in "AB")
    )

    print()
    print("Memory: the largest process of each (a prefork server's biggest worker).")
    header = (
        f"{'resident memory (VmRSS)':<24} {'load start':>11} {'load end':>11} {'growth':>10} "
        f"{'peak VmHWM':>11}"
    )
    print(header)
    print("-" * len(header))
    start, end, peak = figures["memory_start"], figures["memory_end"], figures["memory_peak"]
    for label in start:
        print(
            f"{label:<24} {mb_text(start[label]):>11} {mb_text(end[label]):>11} "
            f"{growth_text(start[label], end[label]):>10} {mb_text(peak[label]):>11}"
        )

    print()
    ok = added["p99"] * 1000 <= TARGET_ADDED_P99_MS
    print(
        f"Checkout p99 added (A - B)  {added['p99'] * 1000:+7.2f} ms   "
        f"target <= {TARGET_ADDED_P99_MS} ms   {'ok' if ok else 'MISS'}"
    )
    print()
    print("Target met." if ok else "TARGET MISSED.")


def problems(plan, figures):
    """What fails the run: failed requests, A's lost, doubled or unfinished events, B's events."""
    found = []
    delivery = figures["delivery"]
    for name in ("A", "B"):
        failed = len(figures[name]["failed"])
        if failed:
            found.append(f"{failed} pay request(s) to {name} failed")
        if figures[name]["unpaid"]:
            found.append(f"{figures[name]['unpaid']} order(s) of {name} answered 200 unpaid")
    missing = len(delivery["missing"]) + len(delivery["without_row"])
    if missing:
        found.append(f"{missing} Purchase(s) of A never reached the sandbox")
    if delivery["duplicated"]:
        found.append(f"{len(delivery['duplicated'])} Purchase(s) of A reached it more than once")
    if figures["unfinished"]:
        found.append(f"{figures['unfinished']} row(s) of A left pending or sending")
    if figures["without_app"]["rows"] or figures["without_app"]["events"]:
        found.append("the server without the app recorded or sent events")
    return found


# --- the run ------------------------------------------------------------------------------------


def start_servers(env, url, args, run_dir):
    server_env = {**env, "DATABASE_URL": with_conn_max_age(url, args.conn_max_age)}
    with_app = WsgiServerProcess(server_env, run_dir, args, name="wsgi-server-a")
    without_app = WsgiServerProcess(
        {**server_env, WITHOUT_APP_ENV: "1"}, run_dir, args, name="wsgi-server-b"
    )
    return {"A": with_app, "B": without_app}


def run(args, url, run_dir):
    from django.conf import settings
    from django.db import connections

    from tests.processes import start_beat, start_worker

    # A prefix of its own per run, so that a kept database never holds these numbers already.
    prefix = f"S{int(time.time())}"
    orders = round(args.rate * args.seconds)
    block = round(args.rate * args.block_seconds)
    warmups = max(WARMUP_ORDERS, 2 * args.client_threads)
    numbers, warmup, blocks = {}, {}, {}
    print(f"Creating 2 x ({warmups} + {orders:,}) orders ...", flush=True)
    for name, _ in SERVERS:
        warmup[name] = make_orders(f"{prefix}{name}W", warmups)
        numbers[name] = make_orders(f"{prefix}{name}", orders)
        blocks[name] = split_blocks(numbers[name], block)
    plan = {"orders": orders, "rounds": len(blocks["A"])}

    sandbox = SandboxProcess(
        token=settings.TIKTOK_TRACKING["ACCESS_TOKEN"], latency=args.sandbox_latency
    )
    flush_broker(args.broker_url)
    env = child_environment(url, run_dir, sandbox.events_url, args.broker_url)
    started, loads = [], {}
    payments = {name: [] for name, _ in SERVERS}
    block_payments = {name: [] for name, _ in SERVERS}
    try:
        print("Starting the WSGI servers, the worker and beat ...", flush=True)
        servers = start_servers(env, url, args, run_dir)
        started.extend(servers.values())
        for server in servers.values():
            server.wait_ready()
        if WITHOUT_APP_READY not in servers["B"].log():
            sys.exit(f"server B did not disconnect the receiver:\n{servers['B'].log()}")
        worker = start_worker(env, run_dir, name="soak-w0")
        started.append(worker)
        started.append(start_beat(env, run_dir))
        pids = ", ".join(f"{process.kind} {process.pid}" for process in started)
        print(f"  pids: {pids} (servers A, B first)", flush=True)
        watched = {"server A": servers["A"], "server B": servers["B"], "worker": worker}
        meter = CpuMeter(
            {
                **{label: process.pid for label, process in watched.items()},
                "beat": started[-1].pid,
                "sandbox": sandbox.pid,
                "benchmark (load)": os.getpid(),
            }
        )

        print(f"Warming up with {warmups} orders per server ...", flush=True)
        for name, _ in SERVERS:
            loads[name] = BlockLoad(servers[name].port, args.rate, args.client_threads, name)
            answers = loads[name].run(warmup[name])
            if any(payment.outcome != "200" for payment in answers):
                sys.exit(f"warm-up requests to {name} failed:\n{servers[name].log()}")
        wait_for_warmup(warmup["A"])
        sandbox.reset()

        print(
            f"Paying {orders:,} orders per server at {args.rate:g}/s in {plan['rounds']} "
            f"round(s) of A then B ...",
            flush=True,
        )
        # What exists now lives to the end: the collector's full passes need not walk it again
        # (each stalls every load thread, and the clocks they read).
        gc.collect()
        gc.freeze()
        memory_start = sample_memory(watched)
        load_started = time.monotonic()
        for round_number in range(plan["rounds"]):
            for name, _ in SERVERS:
                before = meter.sample()
                answers = loads[name].run(blocks[name][round_number])
                meter.add(name, before, meter.sample())
                payments[name] += answers
                block_payments[name].append(answers)
                failed = sum(1 for payment in answers if payment.outcome != "200")
                print(
                    f"  round {round_number + 1:>2}/{plan['rounds']} {name}: {len(answers):,} "
                    f"orders, checkout p99 {ms_text(checkout_spread(answers)['p99'])}, "
                    f"failed {failed}",
                    flush=True,
                )
        load_seconds = time.monotonic() - load_started
        memory_end = sample_memory(watched)
        memory_peak = sample_memory(watched, "VmHWM")
        print(f"  {load_seconds:.0f} s of load in all", flush=True)
        for load in loads.values():
            load.close()
        loads.clear()

        print("Waiting for the deliveries ...", flush=True)
        # Idle through the load, this connection may have outlived a database restart.
        connections.close_all()
        waited = wait_for_deliveries(numbers["A"])
        records = sandbox.requests
        logs = {name: servers[name].log() for name, _ in SERVERS}
    finally:
        for load in loads.values():
            load.close()
        for process in reversed(started):
            process.stop()
        sandbox.stop()
        flush_broker(args.broker_url)

    # The records were read once, before the sandbox stopped; latency's reader takes a sandbox.
    accepted, refused, requests = sandbox_receipts(SimpleNamespace(requests=records))
    figures = {
        "delivery": analyse(payments["A"], numbers["A"], accepted, refused),
        "unfinished": unfinished_rows(numbers["A"]),
        "requests": requests,
        "waited": waited,
        "without_app": without_app_effects(f"{prefix}B", records),
        "memory_start": memory_start,
        "memory_end": memory_end,
        "memory_peak": memory_peak,
        "cpu": meter,
    }
    paid = {name: paid_orders(numbers[name]) for name, _ in SERVERS}
    for name, _ in SERVERS:
        figures[name] = {
            "failed": [payment for payment in payments[name] if payment.outcome != "200"],
            "checkout": checkout_spread(payments[name]),
            "lag": {
                key: percentile([payment.sent - payment.due for payment in payments[name]], q)
                for key, q in (("p99", 0.99), ("max", 1.0))
            },
            "rate": sent_rate(block_payments[name]),
            "block_p99": [checkout_spread(answers)["p99"] for answers in block_payments[name]],
            "paid": len(paid[name]),
            # A request may fail after its commit; one that answered 200 must have paid.
            "unpaid": sum(
                1
                for payment in payments[name]
                if payment.outcome == "200" and payment.number not in paid[name]
            ),
        }
    print_report(args, plan, warmups, figures)
    found = problems(plan, figures)
    if found:
        print()
        for problem in found:
            print(f"FAILED: {problem}.")
        for name, _ in SERVERS:
            if figures[name]["failed"]:
                # The server logs each error's traceback: the last one says what went wrong.
                tail = "\n".join(logs[name].rstrip().splitlines()[-LOG_TAIL_LINES:])
                print(f"Server {name}'s log ends:\n{tail}")
        print("Every order must be paid, and every Purchase of A must arrive exactly once.")
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    return run_on_postgres(
        args.database_url,
        PURPOSE,
        lambda run_dir: run(args, args.database_url, run_dir),
        keep=args.keep,
        needs="The soak benchmark needs PostgreSQL: two servers, a worker and beat share it.",
        run_dir_prefix="tiktok-bench-soak-",
    )


if __name__ == "__main__":
    sys.exit(main())
