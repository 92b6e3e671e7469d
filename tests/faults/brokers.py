"""A broker the fault matrix may restart mid-run: Redis of its own, or the local RabbitMQ node.

Redis is started by the test on a free port (no persistence, as CI runs it), so restarting it
loses every message it held and touches no other user of the machine's Redis. RabbitMQ is the
local node, its application stopped and started again with ``rabbitmqctl`` (root only): the
node keeps its durable queues and persistent messages across the restart, as a RabbitMQ does.
"""

import contextlib
import os
import shutil
import subprocess
from urllib.parse import urlsplit

from tests.processes import free_port, listening, poll_until


class PrivateRedis:
    """A ``redis-server`` of the test's own on 127.0.0.1, restartable on the same port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(lambda: listening(self.port), timeout=30, message="redis-server")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def restart(self):
        """Stop the server (what it held is gone, as with Redis without persistence), start
        it again on the same port."""
        self.stop()
        self.start()


def rabbitmqctl():
    """``rabbitmqctl`` where this process may drive the local node, else None."""
    command = shutil.which("rabbitmqctl") or (
        "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None
    )
    return command if command and os.geteuid() == 0 else None


def restart_rabbitmq(url):
    """Stop the local node's RabbitMQ application and start it again; wait until it listens."""
    command = rabbitmqctl()
    try:
        subprocess.run([command, "stop_app"], check=True, timeout=120, capture_output=True)
    finally:
        # Whatever happened, the node is not left stopped for the tests and users after.
        subprocess.run([command, "start_app"], check=True, timeout=120, capture_output=True)
    parts = urlsplit(url)
    poll_until(
        lambda: listening(parts.port or 5672, parts.hostname), timeout=60, message="RabbitMQ"
    )


@contextlib.contextmanager
def restartable_broker(url):
    """``(broker_url, restart)`` for the suite's broker ``url``; None where this machine cannot
    restart it (no redis-server, or RabbitMQ without root), with the reason."""
    scheme = urlsplit(url).scheme
    if scheme == "redis":
        if not shutil.which("redis-server"):
            yield None, "restarting Redis needs redis-server on the PATH"
            return
        server = PrivateRedis()
        try:
            yield (server.url, server.restart), None
        finally:
            server.stop()
    elif scheme == "amqp":
        if rabbitmqctl() is None:
            yield None, "restarting RabbitMQ needs rabbitmqctl and root"
            return
        yield (url, lambda: restart_rabbitmq(url)), None
    else:
        yield None, f"no way to restart a {scheme} broker"
