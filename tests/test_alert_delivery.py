"""Alerts never touch delivery: their own task and queue, a whole-request deadline, no redirect
followed, and "not configured" apart from "sent"."""

import threading
import time

import pytest
from django.contrib.auth.models import User
from django.core import checks as django_checks
from django.db import connection
from django.test import Client

from tests.alert_endpoint import (
    alert_endpoint,
    hanging_endpoint,
    trickling_endpoint,
    verified,
)
from tests.celery_app import app as celery_app
from tests.conftest import migrate
from tests.test_outbox import tracking
from tiktok_tracking import tasks
from tiktok_tracking.models import ReadinessAlert
from tiktok_tracking.readiness import alerts

SECRET = "alert-delivery-secret"
Status = ReadinessAlert.Status
# The deadline these tests give a POST: short, so that a test that waits it out stays short.
DEADLINE = 1.0


def webhook(url, **more):
    return {"ALERT_WEBHOOK_URL": url, "ALERT_WEBHOOK_SECRET": SECRET, **more}


def pending_alert(market="DE"):
    return ReadinessAlert.objects.create(
        market=market, old="ready", new="not_ready", status=Status.PENDING
    )


def run_in_thread(target, limit):
    """Run ``target`` on a thread; ``(finished, seconds)`` once it ends or ``limit`` passes.

    A run that never ends would hang the test: the thread is a daemon, left behind."""
    done = threading.Event()
    outcome = {}

    def run():
        try:
            outcome["value"] = target()
        finally:
            connection.close()
            done.set()

    started = time.monotonic()
    threading.Thread(target=run, daemon=True).start()
    finished = done.wait(limit)
    return finished, time.monotonic() - started, outcome.get("value")


@pytest.mark.django_db
def test_a_redirecting_alert_webhook_is_a_failure():
    with alert_endpoint() as receiver:
        receiver.answers = [302]
        alert = pending_alert()
        with tracking(READINESS=webhook(receiver.url)):
            assert alerts.deliver_alerts() == 0
        paths = [path for path, _headers, _body in receiver.received]
    alert.refresh_from_db()
    assert (alert.status, alert.attempts, alert.sent_at) == ("pending", 1, None)
    assert alert.last_error.startswith("HTTP 302: a redirect, not followed")
    assert paths == ["/alerts"], "the redirect was followed"


@pytest.mark.django_db
def test_a_redirect_is_retried_then_fails_with_its_status():
    with alert_endpoint() as receiver:
        receiver.answers = [301] * alerts.MAX_ATTEMPTS
        alert = pending_alert()
        with tracking(READINESS=webhook(receiver.url)):
            for attempt in range(alerts.MAX_ATTEMPTS):
                later = alert.next_attempt_at if attempt else None
                alerts.deliver_alerts(later)
                alert.refresh_from_db()
    assert (alert.status, alert.attempts) == ("failed", alerts.MAX_ATTEMPTS)
    assert alert.last_error.startswith("HTTP 301")


def test_only_a_2xx_answer_is_sent():
    assert [alerts.answer_error(status) for status in (200, 202, 204, 299)] == [None] * 4
    assert alerts.answer_error(304).startswith("HTTP 304: a redirect, not followed")
    assert alerts.answer_error(199) == "HTTP 199"
    assert alerts.answer_error(410) == "HTTP 410"


@pytest.mark.django_db
def test_alerts_without_a_webhook_do_not_read_sent():
    with tracking(READINESS={"ALERT_MAIL": False}):
        [alert] = alerts.record_changes(
            {"markets": [{"market": "US", "verdict": "ready", "reasons": []}]},
            {"markets": [{"market": "US", "verdict": "caution", "reasons": ["x"]}]},
        )
        assert alerts.deliver_alerts() == 0
    alert.refresh_from_db()
    assert (alert.status, alert.attempts, alert.sent_at) == ("not_configured", 0, None)

    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    listing = client.get("/admin/tiktok_tracking/readinessalert/").content.decode()
    assert '<td class="field-status">Not configured</td>' in listing
    assert '<td class="field-status">Sent</td>' not in listing
    filtered = client.get("/admin/tiktok_tracking/readinessalert/?status__exact=sent")
    assert "0 readiness alerts" in filtered.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_trickling_alert_endpoint_is_cut_at_the_deadline(monkeypatch):
    monkeypatch.setattr(alerts, "TIMEOUT_SECONDS", DEADLINE)
    alert = pending_alert()
    # Three bytes every 0.2 s: no wait on the socket ever lasts a second, the answer never ends.
    with trickling_endpoint(trickle=0.2) as endpoint, tracking(READINESS=webhook(endpoint.url)):
        finished, seconds, sent = run_in_thread(alerts.deliver_alerts, limit=DEADLINE + 4)
    assert finished, "the POST was still reading the trickle 4 s past its deadline"
    assert sent == 0 and seconds < DEADLINE + 1
    alert.refresh_from_db()
    assert (alert.status, alert.attempts) == ("pending", 1)
    assert alert.last_error == "Timed out after 1 s (the whole request)"


@pytest.mark.django_db(transaction=True)
def test_a_hanging_alert_endpoint_is_cut_at_the_deadline(monkeypatch):
    monkeypatch.setattr(alerts, "TIMEOUT_SECONDS", DEADLINE)
    alert = pending_alert()
    with hanging_endpoint() as endpoint, tracking(READINESS=webhook(endpoint.url)):
        finished, seconds, sent = run_in_thread(alerts.deliver_alerts, limit=DEADLINE + 4)
        assert len(endpoint.received) == 1, "the endpoint got the whole POST"
    assert finished and sent == 0 and seconds < DEADLINE + 1
    alert.refresh_from_db()
    assert alert.last_error == "Timed out after 1 s (the whole request)"


@pytest.mark.django_db
def test_the_readiness_task_never_posts_alerts_itself_but_publishes_their_own_task(monkeypatch):
    published = []
    monkeypatch.setattr(
        tasks.deliver_readiness_alerts, "apply_async", lambda **options: published.append(options)
    )
    pending_alert()
    with hanging_endpoint() as endpoint:
        readiness = webhook(endpoint.url, ALERT_QUEUE="tiktok-alerts")
        with tracking(PAID_ORDERS=None, READINESS=readiness):
            started = time.monotonic()
            tasks.assess_readiness()
            seconds = time.monotonic() - started
        assert endpoint.received == [], "the readiness task posted an alert itself"
    assert seconds < 5
    assert published == [
        {"retry": False, "expires": alerts.RUN_EXPIRES_SECONDS, "queue": "tiktok-alerts"}
    ]


@pytest.mark.django_db
def test_nothing_is_published_while_no_alert_waits_for_the_webhook(monkeypatch):
    published = []
    monkeypatch.setattr(
        tasks.deliver_readiness_alerts, "apply_async", lambda **options: published.append(options)
    )
    with tracking(PAID_ORDERS=None):
        pending_alert("US")  # a webhook removed since: nowhere to post it
        tasks.assess_readiness()
    with tracking(PAID_ORDERS=None, READINESS=webhook("http://127.0.0.1:9/x")):
        tasks.assess_readiness()  # only one pending alert, and it is due: one run
        ReadinessAlert.objects.update(status=Status.SENT)
        tasks.assess_readiness()
    assert len(published) == 1


def test_without_alert_queue_the_alerts_go_where_celery_routes_the_apps_tasks():
    route = celery_app.amqp.router.route
    with tracking(READINESS={}):
        options = alerts.run_options()
    assert "queue" not in options
    assert route(options, "tiktok_tracking.deliver_alerts")["queue"].name == (
        route({}, "tiktok_tracking.deliver_events")["queue"].name
    )
    assert route(options, "tiktok_tracking.deliver_events")["queue"].name == (
        celery_app.conf.task_default_queue
    )
    with tracking(READINESS={"ALERT_QUEUE": "tiktok-alerts"}):
        options = alerts.run_options()
    assert route(options, "tiktok_tracking.deliver_alerts")["queue"].name == "tiktok-alerts"


@pytest.mark.django_db(transaction=True)
def test_one_alert_post_is_in_flight_at_a_time_however_many_runs():
    first, second = pending_alert("US"), pending_alert("DE")
    with alert_endpoint(delay=1.0) as receiver, tracking(READINESS=webhook(receiver.url)):
        first_run = threading.Thread(target=run_in_thread, args=(alerts.deliver_alerts, 10))
        first_run.start()
        time.sleep(0.3)  # the first run has claimed US and waits for its answer
        assert alerts.deliver_alerts() == 0, "a second run posted while a POST was in flight"
        first_run.join()
        posted = [verified(headers, body, SECRET)["id"] for _p, headers, body in receiver.received]
    assert posted == [first.pk, second.pk], "oldest first, each once"


@pytest.mark.django_db
def test_a_failed_post_holds_the_alerts_behind_it_until_its_retry():
    with alert_endpoint() as receiver, tracking(READINESS=webhook(receiver.url)):
        receiver.answers = [503]
        first, second = pending_alert("US"), pending_alert("DE")
        assert alerts.deliver_alerts() == 0
        assert len(receiver.received) == 1
        first.refresh_from_db()
        assert alerts.deliver_alerts(first.next_attempt_at) == 2
    posted = [verified(headers, body, SECRET)["id"] for _p, headers, body in receiver.received]
    assert posted == [first.pk, first.pk, second.pk]


@pytest.mark.django_db
def test_a_run_stops_posting_after_its_time_and_publishes_the_next(monkeypatch):
    monkeypatch.setattr(alerts, "RUN_SECONDS", 0.5)
    published = []
    monkeypatch.setattr(
        tasks.deliver_readiness_alerts, "apply_async", lambda **options: published.append(options)
    )
    for market in ("US", "DE", "FR", "SE", "NO"):
        pending_alert(market)
    with alert_endpoint(delay=0.3) as receiver, tracking(READINESS=webhook(receiver.url)):
        tasks.deliver_readiness_alerts()
        assert len(receiver.received) == 2
    assert ReadinessAlert.objects.filter(status=Status.PENDING).count() == 3
    assert len(published) == 1, "the rest go on in a run of their own"


@pytest.mark.parametrize("queue", [42, "", "  "])
def test_an_alert_queue_that_is_no_queue_name_is_an_error(queue):
    with tracking(READINESS={"ALERT_QUEUE": queue}):
        errors = [e for e in django_checks.run_checks() if e.id == "tiktok_tracking.E019"]
    [error] = errors
    assert "READINESS['ALERT_QUEUE'] must be a Celery queue's name" in error.msg


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("latest_schema_after")
def test_the_migration_reads_alerts_never_posted_as_not_configured():
    old_apps = migrate([("tiktok_tracking", "0011_readiness_report_previous")])
    Alert = old_apps.get_model("tiktok_tracking", "ReadinessAlert")
    unposted = Alert.objects.create(market="US", old="ready", new="caution", status="sent")
    posted = Alert.objects.create(
        market="DE",
        old="ready",
        new="caution",
        status="sent",
        attempts=1,
        sent_at=unposted.created_at,
    )
    waiting = Alert.objects.create(market="FR", old="ready", new="caution", status="pending")
    new_apps = migrate([("tiktok_tracking", "0012_alert_not_configured")])
    Alert = new_apps.get_model("tiktok_tracking", "ReadinessAlert")
    statuses = dict(Alert.objects.values_list("pk", "status"))
    assert statuses == {unposted.pk: "not_configured", posted.pk: "sent", waiting.pk: "pending"}
