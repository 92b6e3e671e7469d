"""Two beats by accident: two ``celery beat`` processes and a worker running its own (``-B``).

For a minute (TIKTOK_TWO_BEATS_SECONDS) three schedulers fire every periodic task, the
readiness run every second, while orders are paid and markets' verdicts keep changing.
TikTok must count every order once, and every verdict change must raise one alert, mailed
once and posted once.
"""

import json
import os
import threading
import time
from collections import Counter
from itertools import pairwise

from django.db import connection
from django_celery_beat.models import PeriodicTask

from tests.alert_endpoint import alert_endpoint, verified
from tests.conftest import wait_until
from tests.factories import delivered_purchases
from tests.faults.conftest import finish, needs_services
from tests.test_outbox import tracking
from tests.test_readiness_beat import mails
from tiktok_tracking.models import ReadinessAlert, ReadinessReport
from tiktok_tracking.readiness import alerts, store
from tiktok_tracking.schedule import READINESS_TASK_NAME, ensure_periodic_tasks, periodic_tasks

pytestmark = needs_services

SECONDS = float(os.environ.get("TIKTOK_TWO_BEATS_SECONDS", "60"))
SECRET = "two-beats-secret"
ADMIN = "readiness@shop.example"
# Markets whose verdict the test turns: the pixel stops (three server purchases without a
# receipt: not_ready) and comes back (a purchase it reports: ready), again and again.
TURNED = ("SE", "NO", "FI")
# Without a grace period, three purchases the pixel missed turn a market not_ready at once.
READINESS = {"ASSESS_INTERVAL": 1, "PIXEL_SILENCE_HOURS": 0}


class Turner(threading.Thread):
    """Turns the TURNED markets not_ready and ready in turn, one step every ``pause`` s."""

    def __init__(self, pause=0.7):
        super().__init__(name="verdict-turner", daemon=True)
        self.pause = pause
        self.stop = threading.Event()
        self.steps = 0
        self.error = None

    def run(self):
        broken = dict.fromkeys(TURNED, False)
        try:
            while not self.stop.wait(self.pause):
                market = TURNED[self.steps % len(TURNED)]
                prefix = f"turn-{market}-{self.steps}-"
                # Broken: three purchases the pixel missed; fixed: one it reported.
                delivered_purchases(market, prefix, 1 if broken[market] else 3, seen=broken[market])
                broken[market] = not broken[market]
                self.steps += 1
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            connection.close()


def subject(alert):
    """The subject of the mail ``alert`` sends (tiktok_tracking.readiness.alerts)."""
    if alert.kind == ReadinessAlert.Kind.CONFIG_CHANGED:
        return "[Django] TikTok tracking: the tracking configuration changed"
    return f"[Django] TikTok tracking: {alert.market} is {alert.new} (was {alert.old})"


def chain_of_reports():
    """The stored reports from the first to the latest, each compared with the one before."""
    chain = [store.latest()]
    while chain[-1].previous_id is not None:
        chain.append(chain[-1].previous)
    return chain[::-1]


def test_two_beats_and_a_worker_with_its_own_send_nothing_twice_and_lose_nothing(
    sandbox, cluster, book, tmp_path
):
    mail_dir = tmp_path / "mail"
    # A slow endpoint keeps each POST open while the other schedulers' runs deliver too.
    with alert_endpoint(delay=0.3) as webhook:
        cluster.env.update(
            TIKTOK_TEST_ADMIN_EMAIL=ADMIN,
            TIKTOK_TEST_EMAIL_DIR=str(mail_dir),
            TIKTOK_TEST_ALERT_WEBHOOK_URL=webhook.url,
            TIKTOK_TEST_ALERT_WEBHOOK_SECRET=SECRET,
            TIKTOK_TEST_READINESS=json.dumps(READINESS),
        )
        # Every periodic task is scheduled, the readiness run every second.
        with tracking(READINESS=READINESS):
            ensure_periodic_tasks()
        assert PeriodicTask.objects.get(name=READINESS_TASK_NAME).interval.every == 1
        enabled = set(PeriodicTask.objects.filter(enabled=True).values_list("task", flat=True))
        assert enabled >= {task for _seconds, task in periodic_tasks().values()}

        # Sound markets, judged once before the schedulers start.
        for market in TURNED:
            delivered_purchases(market, f"sound-{market}-", 25, seen=True)
        with tracking(READINESS=READINESS):
            first = store.assess()
        assert {m["market"]: m["verdict"] for m in first.document["markets"]} == dict.fromkeys(
            TURNED, "ready"
        )

        workers = [cluster.worker(), cluster.worker()]
        with_beat = cluster.worker(extra_args=("-B",))
        beats = [cluster.beat(), cluster.beat()]
        turner = Turner()
        turner.start()
        started = time.monotonic()
        try:
            while time.monotonic() - started < SECONDS:
                book.pay(book.create(8), threads=2)
                time.sleep(0.2)
        finally:
            turner.stop.set()
            turner.join(timeout=30)
        assert turner.error is None, turner.error
        assert "beat: Starting..." in with_beat.log()

        figures = finish("two beats + a worker with -B", book, sandbox, turns=turner.steps)
        # The schedulers stop; the two other workers finish the runs already queued.
        for scheduler in (*beats, with_beat):
            scheduler.stop()
        for _ in range(2):
            wait_until(
                lambda: not ReadinessAlert.objects.filter(status="pending").exists(),
                timeout=60,
                message="every alert posted",
            )
            time.sleep(3)
        logs = [process.log() for process in (*workers, with_beat)]
        cluster.stop()
        posted = [verified(headers, body, SECRET) for _path, headers, body in webhook.received]

    raised = list(
        ReadinessAlert.objects.filter(kind=ReadinessAlert.Kind.READINESS_CHANGED).order_by("pk")
    )
    # Each market's alerts follow on from one another: a change raised twice would not.
    for market in {alert.market for alert in raised}:
        steps = [(a.old, a.new) for a in raised if a.market == market]
        broken = [i for i in range(1, len(steps)) if steps[i][0] != steps[i - 1][1]]
        assert not broken, f"{market}: an alert does not follow on from the one before: {steps}"
    # And they are exactly the changes between each stored report and the one it followed.
    chain = chain_of_reports()
    assert chain[0] == first
    changes = Counter(
        (market, old, new)
        for before, after in pairwise(chain)
        for market, old, new, _reasons in alerts.changes(before.document, after.document)
    )
    assert Counter((a.market, a.old, a.new) for a in raised) == changes
    assert ReadinessReport.objects.count() == len(chain), "a report outside the chain was kept"
    # Every market the test turned was seen broken and fixed, many times over.
    turned = Counter(a.market for a in raised if a.market in TURNED)
    assert min(turned[market] for market in TURNED) >= 4, turned

    # Each alert mailed once and posted once; none left behind.
    assert Counter(p["id"] for p in posted) == Counter(a.pk for a in ReadinessAlert.objects.all())
    assert set(ReadinessAlert.objects.values_list("status", "attempts")) == {("sent", 1)}
    subjects = Counter(m["Subject"] for m in mails(mail_dir))
    assert subjects == Counter(subject(a) for a in ReadinessAlert.objects.all())

    figures.update(
        reports=len(chain),
        discarded=sum(log.count("this run's report is discarded") for log in logs),
        alerts=len(raised),
    )
