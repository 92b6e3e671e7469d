"""Workers whose clocks are an hour off, one behind and one ahead, beside a correct one.

libfaketime shifts every clock a worker process reads (Python's, Celery's, the broker
client's) but the monotonic one; the database's stays true. Each worker delivers its share,
none stalls on rows it thinks not due yet, none takes back a lease another still holds: every
order reaches TikTok once, no copy is sent again.
"""

import glob
import subprocess
import sys
import time

from tests.conftest import skip_unless_required
from tests.faults.conftest import finish, needs_services
from tests.faults.harness import Status

pytestmark = needs_services

ORDERS = 300
SKEW_SECONDS = 3600
# TikTok answers slowly enough that leases are held while the sweeper runs (every second).
LATENCY = 0.2


def faketime_library():
    """Debian's libfaketime for threaded programs (package faketime), or None."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


def skewed(library, seconds):
    """The environment of a process whose clock runs ``seconds`` off the true time."""
    return {
        "LD_PRELOAD": library,
        "FAKETIME": f"{seconds:+d}",
        # Timeouts and the lease's send-by time are measured on the monotonic clock, which a
        # wrong wall clock does not move.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def clock_offset(env):
    """How far a process started with ``env`` finds the wall clock from this one's, in s."""
    shown = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(shown) - time.time()


def test_skewed_worker_clocks(sandbox, cluster, book):
    library = faketime_library()
    if library is None:
        skip_unless_required("libfaketime is not installed (apt-get install faketime)")
    behind_env, ahead_env = skewed(library, -SKEW_SECONDS), skewed(library, SKEW_SECONDS)
    # The workers' clocks are really off, or the scenario would prove nothing.
    for env, sign in ((behind_env, -1), (ahead_env, 1)):
        assert abs(clock_offset({**cluster.env, **env}) - sign * SKEW_SECONDS) < 60
    sandbox.set_latency(LATENCY)
    workers = {
        "behind": cluster.worker(**behind_env),
        "ahead": cluster.worker(**ahead_env),
        "true": cluster.worker(),
    }
    # The sweeper's schedule, on the true clock; its sweeps run on whichever worker takes them.
    cluster.beat()
    book.paid_mix(ORDERS)
    figures = finish("skewed worker clocks, 1 h each way", book, sandbox, timeout=60)
    claimed_by = list(
        book.rows().filter(status=Status.DELIVERED).values_list("claimed_by", flat=True)
    )
    delivered_by = {
        name: sum(1 for worker_name in claimed_by if worker_name.endswith(f":{worker.pid}"))
        for name, worker in workers.items()
    }
    figures["delivered_by"] = delivered_by
    # Each worker sent its share: the one behind did not wait an hour for rows due now.
    assert all(delivered_by.values()), delivered_by
