"""A readiness webhook that hangs or trickles, while purchases are paid: real workers on
PostgreSQL + Redis deliver every purchase in its usual time.

The readiness run fires every second; a backlog of alerts on their last attempt keeps the
webhook busy the whole time (each failed POST frees the next). Two layouts: a worker as a
shop starts it, with two processes and no ALERT_QUEUE; and purchases and alerts on workers
of their own (ALERT_QUEUE).
"""

import json
import time
from datetime import timedelta

from django.db.models import F, Max
from django.utils import timezone

from tests.alert_endpoint import hanging_endpoint, trickling_endpoint
from tests.conftest import wait_until
from tests.faults.conftest import finish, needs_services
from tests.test_outbox import tracking
from tiktok_tracking.models import ReadinessAlert
from tiktok_tracking.readiness import alerts
from tiktok_tracking.schedule import READINESS_TASK_NAME, SWEEP_TASK_NAME, ensure_periodic_tasks

pytestmark = needs_services

SECRET = "alert-endpoint-secret"
ALERT_QUEUE = "tiktok-tests-alerts"
ROUNDS, PER_ROUND = 8, 3
# Payment to TikTok's acceptance, for every purchase. A run of the workers here stays under
# half a second; each POST to the webhook takes its whole deadline (10 s), so a worker that
# waited for one would miss this by far.
USUAL_SECONDS = 2.0


def alerts_on_their_last_attempt(count=10):
    """Alerts the webhook owes, each at its last attempt: a failed POST marks it failed and
    the next one is due at once, so the webhook is posted to again and again."""
    now = timezone.now()
    ReadinessAlert.objects.bulk_create(
        ReadinessAlert(
            created_at=now + timedelta(milliseconds=index),
            market=f"M{index}",
            old="ready",
            new="not_ready",
            status=ReadinessAlert.Status.PENDING,
            attempts=alerts.MAX_ATTEMPTS - 1,
            next_attempt_at=now,
        )
        for index in range(count)
    )


def judged_every_second(cluster, endpoint, **readiness):
    """Beat runs the readiness task every second, and the workers post to ``endpoint``."""
    readiness = {"ASSESS_INTERVAL": 1, **readiness}
    cluster.env.update(
        TIKTOK_TEST_ALERT_WEBHOOK_URL=endpoint.url,
        TIKTOK_TEST_ALERT_WEBHOOK_SECRET=SECRET,
        TIKTOK_TEST_READINESS=json.dumps(readiness),
    )
    with tracking(READINESS=readiness):
        ensure_periodic_tasks()
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.exclude(name__in=[READINESS_TASK_NAME, SWEEP_TASK_NAME]).update(
        enabled=False
    )


def pay_while_the_webhook_is_posted_to(book, endpoint):
    """Once a POST is in flight, pay ROUNDS x PER_ROUND orders, one round a second; returns
    when each round was paid (time.monotonic())."""
    wait_until(lambda: endpoint.received, timeout=20, message="the first alert POST")
    paid_at = []
    for _ in range(ROUNDS):
        book.pay(book.create(PER_ROUND), threads=1)
        paid_at.append(time.monotonic())
        time.sleep(1)
    return paid_at


def unposted_rounds(paid_at, endpoint):
    """The rounds paid while no POST to the webhook was in flight: each one takes its whole
    deadline, from its arrival on (the endpoint never answers)."""
    return [
        when
        for when in paid_at
        if not any(0 <= when - arrived < alerts.TIMEOUT_SECONDS for arrived in endpoint.arrivals)
    ]


def slowest_delivery(book):
    """The longest time from payment to TikTok's acceptance over the scenario's purchases."""
    slowest = book.rows().aggregate(slowest=Max(F("delivered_at") - F("created_at")))["slowest"]
    return slowest.total_seconds()


def judge_speed(name, book, sandbox, endpoint, paid_at):
    figures = finish(name, book, sandbox)
    slowest = slowest_delivery(book)
    figures.update(slowest_delivery_s=round(slowest, 2), alert_posts=len(endpoint.received))
    assert not unposted_rounds(paid_at, endpoint), "orders were paid while no alert was posted"
    assert slowest < USUAL_SECONDS, f"{name}: a purchase took {slowest:.1f} s to reach TikTok"
    return figures


def test_a_hanging_webhook_leaves_a_default_worker_delivering_at_full_speed(sandbox, cluster, book):
    with hanging_endpoint() as endpoint:
        judged_every_second(cluster, endpoint)
        alerts_on_their_last_attempt()
        # A worker as a shop starts it: Celery's prefork pool, here of two processes, and no
        # ALERT_QUEUE, so that it runs the alerts too.
        cluster.worker(extra_args=("--pool=prefork", "--concurrency=2"))
        cluster.beat()
        paid_at = pay_while_the_webhook_is_posted_to(book, endpoint)
        judge_speed("webhook hangs, one default worker", book, sandbox, endpoint, paid_at)


def test_a_trickling_webhook_never_reaches_the_workers_that_deliver(sandbox, cluster, book):
    with trickling_endpoint() as endpoint:
        judged_every_second(cluster, endpoint, ALERT_QUEUE=ALERT_QUEUE)
        alerts_on_their_last_attempt()
        deliverer = cluster.worker()
        alerter = cluster.worker(extra_args=("-Q", ALERT_QUEUE))
        cluster.beat()
        paid_at = pay_while_the_webhook_is_posted_to(book, endpoint)
        judge_speed("webhook trickles, ALERT_QUEUE", book, sandbox, endpoint, paid_at)
        # Celery logs each task a worker takes as "Task <name>[<id>] received".
        assert "Task tiktok_tracking.deliver_alerts[" not in deliverer.log()
        assert "Task tiktok_tracking.deliver_alerts[" in alerter.log()
