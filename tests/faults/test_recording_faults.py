"""The outbox INSERT fails while orders are paid: every paid order still reaches TikTok once.

A lock on the outbox (what ``VACUUM FULL``, ``CLUSTER`` or a migration takes) comes and goes
while the standard mix is paid, with the paying connections' ``lock_timeout`` or
``statement_timeout`` short enough to give up under it. Each payment commits; its purchase is
recorded again after the commit. Then the web process "dies" with events waiting to be
recorded again, and the scan of paid orders run by beat records them.
"""

import json
import logging
import threading
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.backends.signals import connection_created
from django.test import override_settings

from tests.faults.conftest import finish, needs_services
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.rerecording import rerecorder
from tiktok_tracking.schedule import ensure_periodic_tasks

pytestmark = needs_services

ORDERS = 120
OUTBOX = TrackedEvent._meta.db_table
# The lock is held this long, then left free this long, over and over while orders are paid.
LOCK_HELD, LOCK_FREE = 1.2, 0.4


class OutboxLocker(threading.Thread):
    """Takes ``LOCK TABLE <outbox> IN <mode> MODE`` from a connection of its own, on and off."""

    def __init__(self, mode):
        super().__init__(daemon=True)
        self.mode = mode
        self.stop = threading.Event()
        self.times_held = 0
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {OUTBOX} IN {self.mode} MODE")
                    self.times_held += 1
                    self.stop.wait(LOCK_HELD)
                self.stop.wait(LOCK_FREE)
        except Exception as exc:  # reported by the scenario
            self.error = exc
        finally:
            connections.close_all()


class RecordedAgain(logging.Handler):
    """Counts the events whose first INSERT gave up and that were recorded again."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if "recording it again once the payment commits" in record.getMessage():
            self.count += 1


@pytest.fixture
def paying_connections_give_up():
    """``give_up(sql)``: every connection this process opens from now on runs ``sql`` (the
    paying threads', the re-recorder's), but not the locker's, opened with its own setting."""
    statements = []

    def on_connect(sender, connection, **kwargs):
        if threading.current_thread().name.startswith("pay") or "rerecorder" in (
            threading.current_thread().name
        ):
            with connection.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql)

    connection_created.connect(on_connect)
    counter = RecordedAgain()
    logging.getLogger("tiktok_tracking.recording").addHandler(counter)
    yield statements.append, counter
    logging.getLogger("tiktok_tracking.recording").removeHandler(counter)
    connection_created.disconnect(on_connect)
    assert rerecorder.flush(timeout=60)


def pay_under_a_coming_and_going_lock(book, mode):
    locker = OutboxLocker(mode)
    locker.start()
    try:
        book.paid_mix(ORDERS)
    finally:
        locker.stop.set()
        locker.join(timeout=30)
    assert locker.error is None, locker.error
    # What waits to be recorded again is recorded once the lock has gone.
    assert rerecorder.flush(timeout=60)
    return locker.times_held


@pytest.mark.parametrize(
    "setting, mode",
    [("lock_timeout", "SHARE"), ("statement_timeout", "ACCESS EXCLUSIVE")],
    ids=["lock_timeout", "statement_timeout"],
)
def test_outbox_insert_under_a_timeout_loses_no_order(
    setting, mode, sandbox, cluster, book, paying_connections_give_up
):
    give_up, recorded_again = paying_connections_give_up
    give_up(f"SET {setting} = '500ms'")
    cluster.worker()
    cluster.worker()
    cluster.beat()
    held = pay_under_a_coming_and_going_lock(book, mode)
    figures = finish(
        f"outbox INSERT under {setting} ({mode} locks)",
        book,
        sandbox,
        locks=held,
        recorded_again=recorded_again.count,
    )
    assert recorded_again.count > 0, "no INSERT gave up under the lock: the scenario proved nothing"
    assert figures["missing"] == 0


def test_a_web_process_dying_before_recording_again_loses_no_order(
    sandbox, cluster, book, paying_connections_give_up
):
    give_up, recorded_again = paying_connections_give_up
    give_up("SET lock_timeout = '500ms'")
    # Beat runs the scan every second; the workers' scan leaves out no recent order.
    with override_settings(TIKTOK_TRACKING={**settings.TIKTOK_TRACKING, "HEAL_INTERVAL": 1}):
        ensure_periodic_tasks()
    try:
        scan = json.dumps({"HEAL_INTERVAL": 1, "HEAL_GRACE_SECONDS": 0})
        cluster.worker(TIKTOK_TEST_TRACKING=scan)
        cluster.worker(TIKTOK_TEST_TRACKING=scan)
        cluster.beat(TIKTOK_TEST_TRACKING=scan)
        # The process dies with its events waiting: nothing is ever recorded again by it.
        with mock.patch.object(rerecorder, "submit"):
            held = pay_under_a_coming_and_going_lock(book, "SHARE")
        figures = finish(
            "web process died before recording again: the scan of paid orders",
            book,
            sandbox,
            locks=held,
            left_to_the_scan=recorded_again.count,
        )
    finally:
        ensure_periodic_tasks()
    assert recorded_again.count > 0, "no INSERT gave up under the lock: the scenario proved nothing"
    assert figures["missing"] == 0
