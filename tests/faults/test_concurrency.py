"""Four worker processes on one outbox, beat running and a sweeper racing them: exactly once."""

import re
import threading
import time

from django.db import connection

from tests.faults.conftest import ORDERS, finish, needs_services
from tiktok_tracking import tasks

pytestmark = needs_services

WORKERS = 4
DELIVERED_LINE = re.compile(r"TikTok delivery: \d+ claimed, (\d+) delivered")


def test_four_workers_beat_and_a_racing_sweeper_deliver_each_event_once(sandbox, cluster, book):
    # A short answer time keeps many small batches in flight across the four workers.
    sandbox.set_latency(0.02)
    workers = [cluster.worker() for _ in range(WORKERS)]
    cluster.beat()

    # Beat sweeps every second; this sweeper runs flat out beside it, expiring leases and
    # waking workers while they claim, send and record.
    stop = threading.Event()
    sweeps = []

    def sweep():
        try:
            while not stop.is_set():
                tasks.sweep_outbox()
                sweeps.append(1)
                time.sleep(0.01)
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep, name="racing-sweeper")
    sweeper.start()
    try:
        # Twice the usual orders, paid from eight threads at once.
        book.paid_mix(2 * ORDERS, threads=8)
        figures = finish(
            "4 workers + beat + racing sweeper",
            book,
            sandbox,
            sweeps=len(sweeps),
        )
    finally:
        stop.set()
        sweeper.join(timeout=30)

    delivered_by = [sum(int(n) for n in DELIVERED_LINE.findall(worker.log())) for worker in workers]
    figures["deliveries_per_worker"] = delivered_by
    # Every worker took part: the test raced them rather than letting one do everything.
    assert sum(1 for n in delivered_by if n) >= 3, delivered_by
    assert len(sweeps) > 10
