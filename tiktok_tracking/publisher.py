"""Publishes the workers' wake-up call from a background thread, so no checkout waits for it.

A publish to a broker that is down waits out the connection timeout (seconds) however few
retries are asked for. The outbox row is already committed when the publish happens, and a
worker drains every due row whoever woke it, so the message carries nothing: it only says
"there is work". Wake-ups asked for while one is being published go out as one; if a publish
fails, or the process dies first, the sweeper delivers.
"""

import atexit
import logging
import os
import threading
import time

from tiktok_tracking import conf

logger = logging.getLogger(__name__)

# After a publish the thread rests this long, so that under load the wake-ups of many
# checkouts go out as one message instead of costing the web process one publish per order.
# A lone order is published at once.
PUBLISH_INTERVAL = 0.1


class BackgroundPublisher:
    """One daemon thread that calls ``publish()`` once for every run of wake-up requests."""

    def __init__(self, publish, *, interval=PUBLISH_INTERVAL, name="tiktok-tracking-publisher"):
        self._publish = publish
        self._interval = interval
        self._name = name
        self._reset()
        # A forked child (a pre-forking server, a worker pool) inherits the lock in whatever
        # state the parent's thread left it, but not the thread.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self._changed = threading.Condition()
        # Wake-ups asked for, and those covered by a finished publish (or a failed one).
        self._requested = 0
        self._done = 0
        self._thread = None

    def submit(self):
        """Ask for a wake-up; never blocks on the broker, never raises."""
        try:
            with self._changed:
                self._requested += 1
                self._ensure_thread()
                self._changed.notify_all()
        except Exception:
            logger.warning("Could not queue a TikTok delivery wake-up", exc_info=True)

    def flush(self, timeout=None):
        """Wait until every wake-up asked for so far has been published or has failed."""
        with self._changed:
            target = self._requested
            return self._changed.wait_for(lambda: self._done >= target, timeout)

    def _ensure_thread(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self):
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._requested > self._done)
                # Everything asked for until now is covered by this one publish.
                covering = self._requested
            try:
                self._publish()
            except Exception:
                logger.warning(
                    "Could not enqueue TikTok delivery (the sweeper will deliver it)",
                    exc_info=True,
                )
            with self._changed:
                self._done = covering
                self._changed.notify_all()
            if self._interval:
                time.sleep(self._interval)


def publish_wake_up():
    """Publish one bare ``deliver_events`` task."""
    from tiktok_tracking.tasks import deliver_events

    # retry=False: a broker that is down must cost one failed connect, not Celery's default
    # publish retries; the sweeper is the retry.
    deliver_events.apply_async(retry=False)


def enqueue_delivery():
    """Wake a worker to deliver now. Best effort: the sweeper delivers whatever this misses.

    Published from a background thread (``ENQUEUE_IN_BACKGROUND``) so that a slow or dead
    broker never holds up the checkout; inline when Celery runs tasks eagerly (tests).
    """
    from tiktok_tracking.tasks import deliver_events

    if conf.get("ENQUEUE_IN_BACKGROUND") and not deliver_events.app.conf.task_always_eager:
        publisher.submit()
        return
    try:
        publish_wake_up()
    except Exception:
        logger.warning(
            "Could not enqueue TikTok delivery (the sweeper will deliver it)", exc_info=True
        )


publisher = BackgroundPublisher(publish_wake_up)
# A management command or cron script that records events and exits at once still publishes
# them (within a bound: the sweeper covers what a dead broker keeps from going out).
atexit.register(publisher.flush, timeout=5)
