"""Records again, once the payment has committed, the events a passing database error kept out.

A lock or statement timeout, a serialization failure or a broken connection on the outbox
INSERT must not cost the order its event: the payment commits (the INSERT ran in a savepoint),
and the event is recorded again from a background thread, in its own transaction, until the
database takes it or the deadline passes. A process that dies first leaves the order to the
periodic scan of recently paid orders (:func:`tiktok_tracking.healing.record_missing_purchases`).
"""

import atexit
import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from django.db import DatabaseError, DataError, IntegrityError, connections

logger = logging.getLogger(__name__)

# Pauses between tries of the same event (the last one repeats), and how long an event is
# tried before the periodic scan is left to record it.
RETRY_PAUSES = (0.2, 0.5, 1.0, 2.0, 5.0)
RETRY_FOR_SECONDS = 300.0
# Events waiting at once in one process: past that, the oldest are left to the periodic scan
# rather than growing the web process's memory without bound during a long outage.
MAX_WAITING = 10_000


def passing_database_error(exc):
    """Whether ``exc`` is a database error that trying again later can cure (pure).

    Constraint violations are answers, not failures (a second signal for the same payment);
    data errors (a value the column refuses) fail the same way every time.
    """
    return isinstance(exc, DatabaseError) and not isinstance(exc, (IntegrityError, DataError))


@dataclass
class Job:
    """One event to record again: ``record()`` raises on failure."""

    record: object
    description: str
    deadline: float
    tries: int = 0


@dataclass
class Rerecorder:
    """One daemon thread that records the waiting events in turn, each in its own transaction.

    Events wait in arrival order; when one fails, the thread pauses before trying it again
    rather than trying the others, which a lock on the outbox would fail just the same.
    """

    pauses: tuple = RETRY_PAUSES
    retry_for: float = RETRY_FOR_SECONDS
    max_waiting: int = MAX_WAITING
    clock: object = time.monotonic
    sleep: object = time.sleep
    _jobs: collections.deque = field(default_factory=collections.deque, init=False)

    def __post_init__(self):
        self._reset()
        # A forked child inherits the lock in whatever state the parent left it, but not the
        # thread; the parent's waiting events stay the parent's.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self._changed = threading.Condition()
        self._jobs = collections.deque()
        self._busy = False
        self._thread = None

    def submit(self, record, description):
        """Try ``record()`` again from the background thread; never blocks, never raises."""
        try:
            with self._changed:
                if len(self._jobs) >= self.max_waiting:
                    dropped = self._jobs.popleft()
                    logger.error(
                        "Too many TikTok events waiting to be recorded again: %s is left to the "
                        "scan of paid orders",
                        dropped.description,
                    )
                self._jobs.append(Job(record, description, self.clock() + self.retry_for))
                self._ensure_thread()
                self._changed.notify_all()
        except Exception:
            logger.exception("Could not queue %s to be recorded again", description)

    def waiting(self):
        """How many events wait to be recorded again (the one being tried included)."""
        with self._changed:
            return len(self._jobs) + (1 if self._busy else 0)

    def flush(self, timeout=None):
        """Wait until no event waits (recorded, or given up); False if ``timeout`` ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def _ensure_thread(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="tiktok-tracking-rerecorder", daemon=True
            )
            self._thread.start()

    def _run(self):
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._jobs)
                job = self._jobs.popleft()
                self._busy = True
            try:
                self._try(job)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _try(self, job):
        """Record ``job``, pausing between tries, until it is recorded or its deadline passes."""
        while True:
            job.tries += 1
            try:
                job.record()
            except Exception as exc:
                if not passing_database_error(exc):
                    logger.exception("Could not record %s again", job.description)
                    return
                if self.clock() >= job.deadline:
                    logger.error(
                        "Could not record %s after %d tries (%s): the scan of paid orders "
                        "records it once the database takes it",
                        job.description,
                        job.tries,
                        type(exc).__name__,
                    )
                    return
                self.sleep(self.pauses[min(job.tries, len(self.pauses)) - 1])
            else:
                logger.info("Recorded %s after %d tries", job.description, job.tries)
                return
            finally:
                # A broken connection must not be the next try's: this thread's connections
                # are closed after every try, and opened again by the next statement.
                connections.close_all()


rerecorder = Rerecorder()
# A command or cron script that paid orders and exits at once still records them, within a
# bound: whatever it cannot, the scan of paid orders records.
atexit.register(rerecorder.flush, timeout=10)
