"""A worker host cut off from the network mid-batch: its rows come back within one lease.

The worker runs in a network namespace of its own, behind a router namespace that drops every
packet while the link is "cut": a real partition, where nothing answers and nothing refuses,
unlike a proxy that stops forwarding (the kernel on the far side still acknowledges). The
worker reaches PostgreSQL, the broker and TikTok's stand-in through forwarders on the host.
Needs root (network namespaces), PostgreSQL and Redis.
"""

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from tests import processes
from tests.conftest import skip_unless_required, wait_until
from tests.faults.conftest import needs_services
from tiktok_tracking import conf
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.partitions import POSTGRES_OPTIONS, REDIS_TRANSPORT_OPTIONS

pytestmark = needs_services

Status = TrackedEvent.Status
# The scenario's times, scaled from the defaults (LEASE_SECONDS 120, TIMEOUT 10) to a test: the
# test settings' 6 s lease, 2 s TIMEOUT and 1 s sweeps, and the connection
# parameters of docs/deployment.md ("Network partitions") scaled the same way (tcp_user_timeout
# 20 s -> 2 s). TIKTOK_PARTITION_SCALE=production runs the defaults and the recommended
# parameters themselves (minutes), TIKTOK_PARTITION_KERNEL_DEFAULTS=1 none of the parameters:
# how docs/deployment.md's figures were measured.
PARTITION_SECONDS = float(os.environ.get("TIKTOK_PARTITION_SECONDS", "10"))
ORDERS = 20
SCALED = {
    "db": {
        "connect_timeout": 2,
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 1,
        "keepalives_count": 2,
        "tcp_user_timeout": 2000,
    },
    # The test settings' own for Redis.
    "broker": {"socket_timeout": 5, "socket_connect_timeout": 2},
    "tracking": {},
}
PRODUCTION = {
    "db": POSTGRES_OPTIONS,
    "broker": REDIS_TRANSPORT_OPTIONS,
    "tracking": {
        key: conf.DEFAULTS[key]
        # Beat's sweeps stay every second (its schedule is the test settings').
        for key in ("LEASE_SECONDS", "TIMEOUT", "RETRY_BASE_DELAY")
    },
}


def run(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def namespaces_missing():
    """Why this machine cannot make network namespaces, or None."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs root with ip and tc (network namespaces)"
    probe = f"tt-probe-{uuid.uuid4().hex[:6]}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


class Forwarder:
    """Forwards ``host``:``port`` (an ephemeral port) to 127.0.0.1:``upstream_port``."""

    def __init__(self, host, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        # The local port of each connection to the upstream: how PostgreSQL sees the client.
        self.upstream_ports = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            self.upstream_ports.append(upstream.getsockname()[1])
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source, target):
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        with contextlib.suppress(OSError):
            self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


class WorkerHost:
    """Namespace ``worker`` behind namespace ``router``; the host is 10.231.N.6."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.worker_ns, self.router_ns = f"tt-w-{tag}", f"tt-r-{tag}"
        net = f"10.231.{random.randrange(1, 255)}"
        self.host_address = f"{net}.6"
        self.host_link = f"tth{tag}"
        steps = [
            ("ip", "netns", "add", self.worker_ns),
            ("ip", "netns", "add", self.router_ns),
            (
                "ip",
                "link",
                "add",
                "w0",
                "netns",
                self.worker_ns,
                "type",
                "veth",
                "peer",
                "rw",
                "netns",
                self.router_ns,
            ),
            (
                "ip",
                "link",
                "add",
                self.host_link,
                "type",
                "veth",
                "peer",
                "rh",
                "netns",
                self.router_ns,
            ),
            (*self.inside(self.worker_ns), "ip", "addr", "add", f"{net}.2/30", "dev", "w0"),
            (*self.inside(self.worker_ns), "ip", "link", "set", "w0", "up"),
            (*self.inside(self.worker_ns), "ip", "link", "set", "lo", "up"),
            (*self.inside(self.worker_ns), "ip", "route", "add", "default", "via", f"{net}.1"),
            (*self.inside(self.router_ns), "ip", "addr", "add", f"{net}.1/30", "dev", "rw"),
            (*self.inside(self.router_ns), "ip", "addr", "add", f"{net}.5/30", "dev", "rh"),
            (*self.inside(self.router_ns), "ip", "link", "set", "rw", "up"),
            (*self.inside(self.router_ns), "ip", "link", "set", "rh", "up"),
            (*self.inside(self.router_ns), "sysctl", "-qw", "net.ipv4.ip_forward=1"),
            ("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_link),
            ("ip", "link", "set", self.host_link, "up"),
            ("ip", "route", "add", f"{net}.0/30", "via", f"{net}.5"),
        ]
        try:
            for step in steps:
                run(*step)
        except subprocess.CalledProcessError:
            self.remove()
            raise

    @staticmethod
    def inside(namespace):
        return ("ip", "netns", "exec", namespace)

    def cut(self):
        """Drop every packet the router would pass, both ways: nothing answers, nothing
        refuses (a queue of length 0 in front of each of its links)."""
        for link in ("rw", "rh"):
            run(
                *self.inside(self.router_ns),
                "tc",
                "qdisc",
                "add",
                "dev",
                link,
                "root",
                "pfifo",
                "limit",
                "0",
            )

    def mend(self):
        for link in ("rw", "rh"):
            run(
                *self.inside(self.router_ns), "tc", "qdisc", "del", "dev", link, "root", check=False
            )

    def remove(self):
        run("ip", "link", "del", self.host_link, check=False)
        for namespace in (self.worker_ns, self.router_ns):
            run("ip", "netns", "del", namespace, check=False)


@pytest.fixture
def worker_host():
    reason = namespaces_missing()
    if reason is not None:
        skip_unless_required(reason)
    host = WorkerHost()
    yield host
    host.mend()
    host.remove()


def end_forwarded_sessions(forwarder):
    """End the PostgreSQL sessions opened through ``forwarder``: a backend whose client went
    silent with the link waits for a keepalive of its own, and would keep the test database."""
    ports = forwarder.upstream_ports
    if ports:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE client_port = ANY(%s)",
                [ports],
            )


def through(url, host, port):
    parts = urlsplit(url)
    netloc = f"{parts.username}@{host}:{port}" if parts.username else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def start_partitioned_worker(host, env, log_dir, forwarders, db_options):
    """A solo worker inside ``host``'s namespace, reaching everything through ``forwarders``."""
    database = connection.settings_dict
    query = "&".join(f"{key}={value}" for key, value in db_options.items())
    env = {
        **env,
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{host.host_address}:{forwarders['db'].port}/"
            f"{database['NAME']}" + (f"?{query}" if query else "")
        ),
        "TIKTOK_TEST_KERNEL_TCP_DEFAULTS": "1",
        "CELERY_BROKER_URL": through(
            settings.CELERY_BROKER_URL, host.host_address, forwarders["broker"].port
        ),
        "TIKTOK_API_URL": through(env["TIKTOK_API_URL"], host.host_address, forwarders["api"].port),
    }
    name = f"wp-{uuid.uuid4().hex[:6]}"
    log_path = Path(log_dir) / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            *host.inside(host.worker_ns),
            *processes.CELERY_COMMAND,
            "worker",
            *processes.SOLO_WORKER_ARGS,
            f"--hostname={name}@%h",
        ],
        cwd=processes.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_until(
        lambda: processes.WORKER_READY in log_path.read_text(errors="replace"),
        timeout=60,
        message="the partitioned worker to start",
    )
    return process, log, log_path


def test_a_partitioned_workers_rows_come_back_within_one_lease(
    sandbox, celery_env, worker_host, tmp_path, book
):
    from tests.celery_app import app

    app.control.purge()
    upstream = {
        "db": int(connection.settings_dict["PORT"] or 5432),
        "broker": urlsplit(settings.CELERY_BROKER_URL).port or 6379,
        "api": urlsplit(celery_env["TIKTOK_API_URL"]).port,
    }
    forwarders = {
        name: Forwarder(worker_host.host_address, port) for name, port in upstream.items()
    }
    scale = PRODUCTION if os.environ.get("TIKTOK_PARTITION_SCALE") == "production" else SCALED
    tracking = {**settings.TIKTOK_TRACKING, **scale["tracking"]}
    lease = tracking["LEASE_SECONDS"]
    kernel_defaults = bool(os.environ.get("TIKTOK_PARTITION_KERNEL_DEFAULTS"))
    env = {
        **celery_env,
        "TIKTOK_TEST_TRACKING": json.dumps(scale["tracking"]),
        "TIKTOK_TEST_BROKER_OPTIONS": json.dumps({} if kernel_defaults else scale["broker"]),
    }
    process, log, log_path = start_partitioned_worker(
        worker_host, env, tmp_path, forwarders, {} if kernel_defaults else scale["db"]
    )
    beat = processes.start_beat(
        {**celery_env, "TIKTOK_TEST_TRACKING": env["TIKTOK_TEST_TRACKING"]}, tmp_path
    )
    try:
        # The first request is answered late: the link is cut while the worker holds its rows.
        sandbox.program([{"delay": 1.0}])
        orders = book.create(ORDERS)
        book.pay(orders)
        wait_until(lambda: sandbox.requests, timeout=20, message="the worker's first request")
        worker_host.cut()
        held = TrackedEvent.objects.filter(status=Status.SENDING).count()
        time.sleep(PARTITION_SECONDS)
        worker_host.mend()
        mended = time.monotonic()
        wait_until(
            lambda: TrackedEvent.objects.filter(status=Status.DELIVERED).count() == ORDERS,
            timeout=5 * lease + 60,
            interval=0.1,
            message="every row delivered after the link came back",
        )
        back_after = time.monotonic() - mended
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        if process.poll() is None:
            process.kill()
        log.close()
        beat.stop()
        for forwarder in forwarders.values():
            forwarder.close()
        end_forwarded_sessions(forwarders["db"])
    print(f"held {held} row(s); all delivered {back_after:.1f} s after the link came back")
    assert held, "the link was cut before the worker claimed anything"
    assert back_after <= lease, (
        f"the rows came back {back_after:.1f} s after the link, beyond one lease ({lease} s):\n"
        + log_path.read_text(errors="replace")[-4000:]
    )
