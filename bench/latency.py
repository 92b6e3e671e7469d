"""Latency: from an order's commit to the sandbox's receipt of its Purchase, at a steady rate."""

import argparse
import contextlib
import http.client
import math
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from bench.common import (
    child_environment,
    flush_broker,
    make_orders,
    run_on_postgres,
)
from tests.processes import terminate

# Why the benchmark refuses databases not named for it.
PURPOSE = "writes orders and events into it"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tiktok_bench_latency"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/6"
DEFAULT_RATE = 100.0
DEFAULT_SECONDS = 60.0
DEFAULT_WORKERS = 1
DEFAULT_SANDBOX_LATENCY = 0.05
# The server's threads keep their database connection, as a production deployment does.
DEFAULT_CONN_MAX_AGE = 60
# Enough senders that a slow answer never holds back the next request's start.
DEFAULT_CLIENT_THREADS = 32
SERVER_KINDS = ("prefork", "threaded")
DEFAULT_SERVER_PROCESSES = 2 * (os.cpu_count() or 1) + 1
WARMUP_ORDERS = 20
TARGET_P50 = 1.0
TARGET_P99 = 3.0
# After the last order: how long outstanding events may take before they count as lost.
SETTLE_TIMEOUT = 60.0
# Once every row is finished, keep listening this long (several sweeps of 1 s) for duplicates.
QUIET_SECONDS = 3.0
POLL_INTERVAL = 0.2
REQUEST_TIMEOUT = 30.0
SERVER_READY = "WSGI server listening on port "
# Set in a server's environment, it serves the shop without the app: the app's
# payment_completed receiver is disconnected at start, as bench.checkout's baseline does.
WITHOUT_APP_ENV = "TIKTOK_BENCH_WITHOUT_APP"
WITHOUT_APP_READY = "payment_completed receiver disconnected: the shop without the app"
SERVER_START_TIMEOUT = 30.0
# The test shop's country switch: a US visitor, whose purchase the consent policy lets through.
REQUEST_HEADERS = {"Cookie": "country=US", "Content-Length": "0"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Pay orders at a steady rate through a WSGI server with a live Celery worker "
        "and beat; time each order's commit to the TikTok sandbox's receipt of its Purchase.",
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
        help=f"how long orders are paid (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"PostgreSQL database to use (default {DEFAULT_DATABASE_URL}); its name must "
        "contain 'bench'. It is created if missing and dropped at the end unless --keep",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"Celery worker processes, solo pool each (default {DEFAULT_WORKERS})",
    )
    add_run_arguments(parser, broker_url=DEFAULT_BROKER_URL)
    # The WSGI server's own entry point, started by the benchmark in a process of its own.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.serve:
        if args.rate <= 0 or args.seconds <= 0:
            parser.error("--rate and --seconds must be positive")
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        check_run_arguments(parser, args)
    return args


def add_run_arguments(parser, *, broker_url, per_server=""):
    """The options this benchmark shares with the soak: sandbox, servers, broker, load, keep."""
    parser.add_argument(
        "--sandbox-latency",
        type=float,
        default=DEFAULT_SANDBOX_LATENCY,
        help=f"seconds the sandbox takes to answer each track request "
        f"(default {DEFAULT_SANDBOX_LATENCY:g})",
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=DEFAULT_CONN_MAX_AGE,
        help=f"the WSGI server's CONN_MAX_AGE in seconds (default {DEFAULT_CONN_MAX_AGE}); 0 "
        "opens a PostgreSQL connection per request, as Django does by default",
    )
    parser.add_argument(
        "--broker-url",
        default=broker_url,
        help=f"Redis database used as the Celery broker (default {broker_url}); "
        "it is flushed before and after the run",
    )
    parser.add_argument(
        "--client-threads",
        type=int,
        default=DEFAULT_CLIENT_THREADS,
        help=f"load generator threads{per_server} (default {DEFAULT_CLIENT_THREADS})",
    )
    parser.add_argument(
        "--server",
        choices=SERVER_KINDS,
        default="prefork",
        help="prefork (default): forked processes serving one request at a time each, as "
        "gunicorn's sync workers run Django; threaded: one process, a thread per kept-alive "
        "connection",
    )
    parser.add_argument(
        "--server-processes",
        type=int,
        default=DEFAULT_SERVER_PROCESSES,
        help=f"processes of a prefork server (default {DEFAULT_SERVER_PROCESSES}: twice the "
        "cores plus one, gunicorn's advice)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the database (orders, events) in place"
    )


def check_run_arguments(parser, args):
    """Refuse values of :func:`add_run_arguments`' options that cannot make a run."""
    if args.client_threads < 1:
        parser.error("--client-threads must be at least 1")
    if args.server_processes < 1:
        parser.error("--server-processes must be at least 1")
    if args.conn_max_age < 0:
        parser.error("--conn-max-age must be 0 or more")
    broker = urlsplit(args.broker_url)
    # The run flushes it: never the database every Redis client uses by default.
    if broker.scheme != "redis" or broker.path.strip("/") in ("", "0"):
        parser.error("--broker-url must be redis://host:port/<n> with n other than 0")


# --- the WSGI server (runs in its own process) --------------------------------------------------


class LoopbackWSGIServer(WSGIServer):
    """wsgiref's server, one request at a time: each process of a prefork server runs one.

    The kernel hands each new connection to an idle process, which serves one request and
    closes the connection, as gunicorn's sync workers do: no request shares an interpreter (and
    its lock) with another.
    """

    # socketserver's default backlog of 5 resets connections when requests arrive together.
    request_queue_size = 1024

    def server_bind(self):
        # HTTPServer.server_bind() resolves the host's FQDN, which can stall on a bad resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class ThreadingWSGIServer(socketserver.ThreadingMixIn, LoopbackWSGIServer):
    """wsgiref's server with one thread per connection, as a threaded production server has."""

    daemon_threads = True


class OneRequestHandler(WSGIRequestHandler):
    """wsgiref's handler as it is (one request, then the connection closes), without the log."""

    def log_message(self, format, *args):
        pass


class KeepAliveServerHandler(ServerHandler):
    """Answers in HTTP/1.1, so that the client may send its next request on the connection."""

    http_version = "1.1"

    def cleanup_headers(self):
        super().cleanup_headers()
        if "Content-Length" not in self.headers:
            # Without a length the answer ends where the connection does.
            self.headers["Connection"] = "close"
            self.request_handler.close_connection = True


class KeepAliveRequestHandler(WSGIRequestHandler):
    """wsgiref's handler, serving every request of a kept-alive connection, not only the first.

    The connection's thread lives as long as the connection, and so does its database
    connection when CONN_MAX_AGE allows: a production server keeps both, a fresh PostgreSQL
    backend per order would cost more than the order itself.
    """

    protocol_version = "HTTP/1.1"

    def handle(self):
        self.close_connection = False
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self):
        # wsgiref's handle(), for one request of the connection.
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():
            self.close_connection = True
            return
        handler = KeepAliveServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        handler.request_handler = self
        handler.run(self.server.get_app())

    def log_message(self, format, *args):
        # One access log line per order would only cost the server time; errors still print.
        pass


def server_text(args):
    """How the benchmark's WSGI server serves, for the reports (pure)."""
    if args.server == "threaded":
        return (
            "wsgiref + ThreadingMixIn in its own process, HTTP/1.1 keep-alive: one thread per "
            "client connection"
        )
    return (
        f"wsgiref in {args.server_processes} forked processes sharing one socket, one request "
        "at a time each and the connection closed after it (gunicorn's sync workers)"
    )


def serve(kind, processes):
    """Serve the test project on a free port of 127.0.0.1 until terminated."""
    from django.core.wsgi import get_wsgi_application

    if kind == "threaded":
        server = ThreadingWSGIServer(("127.0.0.1", 0), KeepAliveRequestHandler)
    else:
        server = LoopbackWSGIServer(("127.0.0.1", 0), OneRequestHandler)
    # Loaded before any fork (gunicorn's --preload): every process serves the same code.
    server.set_app(get_wsgi_application())
    if os.environ.get(WITHOUT_APP_ENV):
        disconnect_receiver()
    if kind == "threaded":
        print(f"{SERVER_READY}{server.server_port}", flush=True)
        server.serve_forever(poll_interval=0.1)
        return
    serve_forked(server, processes)


def serve_forked(server, processes):
    """Fork ``processes`` copies of ``server``; stop them all when this process is terminated."""
    from django.db import connections

    # A database connection must never be shared by two processes.
    connections.close_all()
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                server.serve_forever(poll_interval=0.1)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(signum, frame):
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"{SERVER_READY}{server.server_port}", flush=True)
    while True:
        signal.pause()


def disconnect_receiver():
    """Take the app's receiver off payment_completed; a baseline still wired to it would lie."""
    from bench.checkout import DISPATCH_UID
    from tiktok_tracking.signals import payment_completed

    if not payment_completed.disconnect(dispatch_uid=DISPATCH_UID):
        sys.exit(f"no receiver connected to payment_completed as {DISPATCH_UID!r}")
    print(WITHOUT_APP_READY, flush=True)


class WsgiServerProcess:
    """``python -m bench.latency --serve`` in a subprocess; its output goes to a log file."""

    kind = "wsgi server"

    def __init__(self, env, log_dir, args, name="wsgi-server"):
        # A name per server, so that servers sharing a run's folder keep their logs apart.
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.latency",
                "--serve",
                "--server",
                args.server,
                "--server-processes",
                str(args.server_processes),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.port = None

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self):
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while self.port is None:
            log = self.log()
            if SERVER_READY in log:
                self.port = int(log.split(SERVER_READY, 1)[1].split()[0])
            elif self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the WSGI server did not start:\n{log}")
            else:
                time.sleep(0.05)
        return self

    def stop(self):
        terminate(self.process)
        self._log.close()


# --- the load: orders paid on a fixed schedule --------------------------------------------------


@dataclass
class Payment:
    number: str
    due: float  # monotonic time the schedule gave this request
    sent: float  # monotonic time the request was sent
    answered: float  # monotonic time the whole answer was read
    answered_wall: float  # the same as a wall-clock time, comparable with the sandbox's
    outcome: str  # "200", another HTTP status, or the error's name


class LoadGenerator:
    """Open loop: request i starts at start + i / rate, whatever became of the earlier ones."""

    def __init__(self, port, rate, threads):
        self.port = port
        self.rate = rate
        self.threads = threads
        self._local = threading.local()

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # One kept-alive connection per thread; should the server close it, http.client
            # opens a new one for the next request.
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self._local.connection = connection
        return connection

    def pay(self, number, due):
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic()
        connection = self._connection()
        try:
            connection.request("POST", f"/pay/{number}/", headers=REQUEST_HEADERS)
            response = connection.getresponse()
            response.read()
            outcome = str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            outcome = type(exc).__name__
        return Payment(number, due, sent, time.monotonic(), time.time(), outcome)

    def run(self, numbers):
        # A short lead so the first requests are not already late when the pool starts.
        start = time.monotonic() + 0.2
        with ThreadPoolExecutor(self.threads, thread_name_prefix="pay") as pool:
            futures = [
                pool.submit(self.pay, number, start + index / self.rate)
                for index, number in enumerate(numbers)
            ]
            return [future.result() for future in futures]


# --- waiting for the deliveries -----------------------------------------------------------------


def unfinished_rows(numbers):
    from tiktok_tracking.models import TrackedEvent

    return TrackedEvent.objects.filter(
        order_id__in=numbers,
        status__in=(TrackedEvent.Status.PENDING, TrackedEvent.Status.SENDING),
    ).count()


def wait_for_warmup(numbers, timeout=60.0):
    from tiktok_tracking.models import TrackedEvent

    deadline = time.monotonic() + timeout
    delivered = TrackedEvent.objects.filter(
        order_id__in=numbers, status=TrackedEvent.Status.DELIVERED
    )
    while delivered.count() < len(numbers):
        if time.monotonic() > deadline:
            sys.exit(f"warm-up: {delivered.count()} of {len(numbers)} events delivered in time")
        time.sleep(POLL_INTERVAL)


def wait_for_deliveries(numbers):
    """Until no row of ``numbers`` is pending or sending (or SETTLE_TIMEOUT); seconds waited."""
    started = time.monotonic()
    while unfinished_rows(numbers) and time.monotonic() - started < SETTLE_TIMEOUT:
        time.sleep(POLL_INTERVAL)
    waited = time.monotonic() - started
    # A duplicate would come from a redelivered task or an expired lease, some sweeps later.
    time.sleep(QUIET_SECONDS)
    return waited


# --- what the sandbox and the database saw ------------------------------------------------------


def percentile(values, fraction):
    """Nearest-rank percentile of ``values`` (any order); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def spread(values):
    return {
        name: percentile(values, fraction)
        for name, fraction in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))
    }


def sandbox_receipts(sandbox):
    """Per event_id, the receipt times of accepted events, and a count of the refused ones."""
    accepted, refused, requests = {}, 0, 0
    for record in sandbox.requests:
        requests += 1
        body = record["body"] if isinstance(record["body"], dict) else {}
        items = [item for item in body.get("data") or () if isinstance(item, dict)]
        answer = record["answer"]
        if answer["status"] != 200 or answer["code"] != 0:
            refused += len(items)
            continue
        for item in items:
            accepted.setdefault(item.get("event_id"), []).append(record["received_at"])
    return accepted, refused, requests


def outbox_rows(numbers):
    """The Purchase rows of ``numbers``: order number -> (event_id, created_at, status)."""
    from tiktok_tracking.models import TrackedEvent

    rows = TrackedEvent.objects.filter(order_id__in=numbers, event="Purchase").values_list(
        "order_id", "event_id", "created_at", "status"
    )
    return {
        order_id: (event_id, created_at, status) for order_id, event_id, created_at, status in rows
    }


def paid_orders(numbers):
    from tests.shop.models import Order

    return set(Order.objects.filter(number__in=numbers, paid=True).values_list("number", flat=True))


def database_version():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"PostgreSQL {cursor.fetchone()[0]}"


# --- the report ---------------------------------------------------------------------------------


def seconds_text(value):
    return "-" if value is None else f"{value:.3f} s"


def ms_text(value):
    return "-" if value is None else f"{value * 1000:.1f} ms"


def analyse(payments, numbers, accepted, refused):
    """The figures of the report, and the list of problems that make the run fail."""
    rows = outbox_rows(numbers)
    paid = paid_orders(numbers)
    failed = [payment for payment in payments if payment.outcome != "200"]
    answered_at = {payment.number: payment.answered_wall for payment in payments}
    from_commit, from_answer, missing, duplicated, without_row = [], [], [], [], []
    statuses = {}
    for number in sorted(paid):
        if number not in rows:
            without_row.append(number)
            continue
        event_id, created_at, status = rows[number]
        statuses[status] = statuses.get(status, 0) + 1
        receipts = accepted.get(event_id, [])
        if not receipts:
            missing.append(number)
            continue
        if len(receipts) > 1:
            duplicated.append(number)
        first = min(receipts)
        from_commit.append(first - created_at.timestamp())
        if number in answered_at:
            from_answer.append(first - answered_at[number])
    commits = sorted(rows[number][1].timestamp() for number in paid if number in rows)
    span = commits[-1] - commits[0] if len(commits) > 1 else 0.0
    return {
        "paid": len(paid),
        "failed": failed,
        "commit_span": span,
        "commit_rate": (len(commits) - 1) / span if span else 0.0,
        "post": spread([payment.answered - payment.sent for payment in payments]),
        "lag": spread([payment.sent - payment.due for payment in payments]),
        "from_commit": spread(from_commit),
        "from_answer": spread(from_answer),
        "received": len(from_commit),
        "missing": missing,
        "duplicated": duplicated,
        "without_row": without_row,
        "refused": refused,
        "statuses": statuses,
    }


def print_report(args, figures, orders, sandbox_requests, waited, versions):
    print()
    print("End-to-end latency: order commit -> TikTok sandbox receipt of its Purchase")
    print(f"  date       {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"  versions   {versions}")
    print(
        f"  load       {orders:,} orders paid by POST /pay/<number>/ at {args.rate:g}/s for "
        f"{args.seconds:g} s, open loop ({args.client_threads} client threads), each order "
        "fresh and created before the clock"
    )
    database = (
        f"kept for {args.conn_max_age} s (CONN_MAX_AGE)"
        if args.conn_max_age
        else "one per request (CONN_MAX_AGE 0)"
    )
    print(f"  server     {server_text(args)}; database connections {database}")
    from tiktok_tracking import conf

    print(
        f"  delivery   {args.workers} Celery worker(s), solo pool; beat sweeping every "
        f"{conf.get('SWEEP_INTERVAL')} s; Redis broker; {WARMUP_ORDERS} warm-up orders "
        "delivered before the clock"
    )
    print(
        "  commit     TrackedEvent.created_at, written in the payment's transaction just "
        "before COMMIT"
    )
    print("  receipt    the sandbox's received_at of the track request carrying the event")
    print()
    print("Orders")
    print(
        f"  committed            {figures['paid']:,} of {orders:,} in "
        f"{figures['commit_span']:.2f} s = {figures['commit_rate']:.1f} orders/s"
    )
    print(f"  failed requests      {len(figures['failed'])}")
    for payment in figures["failed"][:5]:
        print(f"                       {payment.number}: {payment.outcome}")
    lag = figures["lag"]
    print(
        f"  start behind plan    p99 {ms_text(lag['p99'])}, max {ms_text(lag['max'])} "
        "(load generator lag)"
    )
    print()
    print("Baseline")
    post = figures["post"]
    print(
        f"  POST /pay/ answered  p50 {ms_text(post['p50'])}  p90 {ms_text(post['p90'])}  "
        f"p99 {ms_text(post['p99'])}  max {ms_text(post['max'])}  (as the load generator saw it)"
    )
    print(f"  sandbox answers      after {args.sandbox_latency * 1000:.0f} ms per track request")
    print()
    print("Delivery")
    received = figures["received"]
    print(
        f"  events received      {received:,} of {figures['paid']:,} orders; "
        f"missing {len(figures['missing']) + len(figures['without_row'])}, "
        f"duplicated {len(figures['duplicated'])}, refused by the sandbox {figures['refused']}"
    )
    if figures["without_row"]:
        print(f"  paid without a row   {len(figures['without_row'])}")
    for label, numbers in (("missing", figures["missing"]), ("duplicated", figures["duplicated"])):
        if numbers:
            print(f"  {label:<20} e.g. {', '.join(numbers[:5])}")
    statuses = ", ".join(
        f"{status} {count:,}" for status, count in sorted(figures["statuses"].items())
    )
    print(f"  outbox rows          {statuses}")
    per_request = received / sandbox_requests if sandbox_requests else 0
    print(f"  track requests       {sandbox_requests:,} ({per_request:.1f} events per request)")
    print(f"  settled              {waited:.1f} s after the last answer")
    print()
    header = f"{'latency':<34} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}"
    print(header)
    print("-" * len(header))
    for label, key in (
        ("commit -> sandbox receipt", "from_commit"),
        ("POST answered -> sandbox receipt", "from_answer"),
    ):
        values = figures[key]
        print(
            f"{label:<34} "
            + " ".join(f"{seconds_text(values[name]):>9}" for name in ("p50", "p90", "p99", "max"))
        )
    print()
    verdicts = []
    for name, target in (("p50", TARGET_P50), ("p99", TARGET_P99)):
        value = figures["from_commit"][name]
        ok = value is not None and value <= target
        verdicts.append(ok)
        print(
            f"Latency {name}  {seconds_text(value):>9}   target <= {target:g} s   "
            f"{'ok' if ok else 'MISS'}"
        )
    print()
    print("Latency targets met." if all(verdicts) else "LATENCY TARGET MISSED.")


# --- the run ------------------------------------------------------------------------------------


def with_conn_max_age(url, seconds):
    """``url`` with django-environ's ``conn_max_age`` option, which sets CONN_MAX_AGE."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "conn_max_age"]
    query.append(("conn_max_age", str(seconds)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def versions():
    import celery
    import django

    python = sys.version.split()[0]
    return (
        f"{database_version()}; Django {django.get_version()}; Celery {celery.__version__}; "
        f"Python {python}"
    )


def run(args, url, run_dir):
    from django.conf import settings

    from tests.processes import start_beat, start_worker
    from tiktok_tracking.sandbox import SandboxServer

    # A prefix of its own per run, so that a kept database never holds these numbers already.
    prefix = f"L{int(time.time())}"
    count = round(args.rate * args.seconds)
    print(f"Creating {WARMUP_ORDERS} + {count:,} orders ...", flush=True)
    warmup = make_orders(f"{prefix}W", WARMUP_ORDERS)
    numbers = make_orders(prefix, count)

    sandbox = SandboxServer(
        token=settings.TIKTOK_TRACKING["ACCESS_TOKEN"], latency=args.sandbox_latency
    ).start()
    flush_broker(args.broker_url)
    env = child_environment(url, run_dir, sandbox.events_url, args.broker_url)
    started = []
    try:
        print("Starting the WSGI server, worker(s) and beat ...", flush=True)
        server_env = {**env, "DATABASE_URL": with_conn_max_age(url, args.conn_max_age)}
        server = WsgiServerProcess(server_env, run_dir, args)
        started.append(server)
        server.wait_ready()
        for index in range(args.workers):
            started.append(start_worker(env, run_dir, name=f"latency-w{index}"))
        started.append(start_beat(env, run_dir))
        pids = ", ".join(f"{process.kind} {process.pid}" for process in started)
        print(f"  pids: {pids}", flush=True)

        print(f"Warming up with {WARMUP_ORDERS} orders ...", flush=True)
        warmup_payments = LoadGenerator(server.port, 10, 1).run(warmup)
        if any(payment.outcome != "200" for payment in warmup_payments):
            sys.exit(f"warm-up requests failed:\n{server.log()}")
        wait_for_warmup(warmup)
        sandbox.reset()

        print(f"Paying {count:,} orders at {args.rate:g}/s ...", flush=True)
        payments = LoadGenerator(server.port, args.rate, args.client_threads).run(numbers)
        print("Waiting for the deliveries ...", flush=True)
        waited = wait_for_deliveries(numbers)
        accepted, refused, sandbox_requests = sandbox_receipts(sandbox)
    finally:
        for process in reversed(started):
            process.stop()
        sandbox.stop()
        flush_broker(args.broker_url)
    figures = analyse(payments, numbers, accepted, refused)
    print_report(args, figures, count, sandbox_requests, waited, versions())
    lost = len(figures["missing"]) + len(figures["without_row"]) + len(figures["failed"])
    if lost or figures["duplicated"]:
        print("FAILED: every order's Purchase must arrive exactly once.")
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.serve:
        serve(args.server, args.server_processes)
        return 0
    return run_on_postgres(
        args.database_url,
        PURPOSE,
        lambda run_dir: run(args, args.database_url, run_dir),
        keep=args.keep,
        needs="The latency benchmark needs PostgreSQL: a server, a worker and beat share it.",
        run_dir_prefix="tiktok-bench-latency-",
    )


if __name__ == "__main__":
    sys.exit(main())
