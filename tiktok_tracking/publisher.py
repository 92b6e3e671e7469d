"""Publishes delivery tasks from a background thread, so that no checkout waits for the broker.

A publish to a broker that is down waits out the connection timeout (seconds) however few
retries are asked for. The outbox row is already committed when the publish happens, so the
publish is only a wake-up call: if it fails, or the process dies first, the sweeper delivers.
"""

import atexit
import logging
import os
import queue
import threading
import time

logger = logging.getLogger(__name__)

# Publishes waiting while the broker is slow or down; past this, wake-ups are dropped (and
# logged): the sweeper still delivers every event, a little later.
MAX_WAITING = 10_000
# Wake-ups waiting together are published as one task: one worker drain covers them all.
MAX_IDS_PER_TASK = 1_000
# After a publish the thread rests this long, so that under load the wake-ups of many
# checkouts go out as one message (a worker drains everything due, whoever woke it) instead
# of costing the web process one publish per order. A lone order is published at once.
PUBLISH_INTERVAL = 0.1


class BackgroundPublisher:
    """A queue of row-id lists and one daemon thread that publishes them with ``publish``."""

    def __init__(
        self,
        publish,
        *,
        max_waiting=MAX_WAITING,
        interval=PUBLISH_INTERVAL,
        name="tiktok-tracking-publisher",
    ):
        self._publish = publish
        self._max_waiting = max_waiting
        self._interval = interval
        self._name = name
        self._reset()
        # A forked child (a pre-forking server, a worker pool) inherits the queue and its locks
        # in whatever state the parent's thread left them, but not the thread.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self._queue = queue.Queue(maxsize=self._max_waiting)
        self._thread = None
        self._start_lock = threading.Lock()

    def submit(self, tracked_event_ids):
        """Queue a wake-up for these rows; never blocks, never raises."""
        try:
            self._ensure_thread()
            self._queue.put_nowait(list(tracked_event_ids))
        except queue.Full:
            logger.warning(
                "TikTok delivery wake-ups are backing up (broker slow or down); "
                "the sweeper will deliver the events"
            )
        except Exception:
            logger.warning("Could not queue a TikTok delivery wake-up", exc_info=True)

    def flush(self, timeout=None):
        """Wait until every queued wake-up has been published or has failed; True if done."""
        if self._thread is None:
            return True
        done = threading.Event()

        def wait_for_queue():
            self._queue.join()
            done.set()

        threading.Thread(target=wait_for_queue, daemon=True).start()
        return done.wait(timeout)

    def _ensure_thread(self):
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self):
        while True:
            first = self._queue.get()
            taken = [first]
            # Whatever queued up during the last publish goes out in one task.
            ids = list(first)
            while len(ids) < MAX_IDS_PER_TASK:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                taken.append(more)
                ids.extend(more)
            try:
                self._publish(ids)
            except Exception:
                logger.warning(
                    "Could not enqueue TikTok delivery (the sweeper will deliver it)",
                    exc_info=True,
                )
            finally:
                for _ in taken:
                    self._queue.task_done()
            if self._interval:
                time.sleep(self._interval)


def publish_deliver_task(tracked_event_ids):
    from tiktok_tracking.tasks import deliver_events

    # retry=False: a broker that is down must cost one failed connect, not Celery's default
    # publish retries; the sweeper is the retry.
    deliver_events.apply_async(args=[tracked_event_ids], retry=False)


publisher = BackgroundPublisher(publish_deliver_task)
# A management command or cron script that records events and exits at once still publishes
# them (within a bound: the sweeper covers what a dead broker keeps from going out).
atexit.register(publisher.flush, timeout=5)
