"""Readiness alerts: a market ready -> not_ready -> ready sends two alerts, by mail and webhook."""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from tests.alert_endpoint import alert_endpoint
from tests.alert_endpoint import verified as verified_with
from tests.factories import outbox_rows
from tests.settings import admins
from tests.test_outbox import tracking
from tiktok_tracking import rollups
from tiktok_tracking.models import ConfigChange, ReadinessAlert, TrackedEvent
from tiktok_tracking.readiness import alerts
from tiktok_tracking.signals import readiness_changed
from tiktok_tracking.tasks import assess_readiness, deliver_readiness_alerts

SECRET = "webhook-shared-secret"
Status = TrackedEvent.Status


@pytest.fixture
def webhook():
    with alert_endpoint() as server:
        yield server


@pytest.fixture
def alert_runs_inline():
    """The worker's part, in this process: the run of ``deliver_alerts`` that the readiness
    task publishes runs at once (Celery's eager mode), as a worker would take it."""
    from tests.celery_app import app

    assert deliver_readiness_alerts.app is app
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def verified(headers, body):
    return verified_with(headers, body, SECRET)


def healthy_purchases(prefix, count=25):
    rows = outbox_rows(count, prefix=prefix)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Status.DELIVERED,
        delivered_at=timezone.now(),
        browser_seen_at=timezone.now(),
        match_keys=rollups.key_mask("email", "ttclid", "ip", "user_agent"),
    )
    return rows


@pytest.mark.django_db
@pytest.mark.usefixtures("alert_runs_inline")
@override_settings(ADMINS=admins("admin@shop.example"))
def test_ready_to_not_ready_and_back_sends_two_alerts_by_mail_and_webhook(webhook):
    url, receiver = webhook.url, webhook
    with tracking(
        PAID_ORDERS=None,
        READINESS={"ALERT_WEBHOOK_URL": url, "ALERT_WEBHOOK_SECRET": SECRET},
    ):
        healthy_purchases("before", count=25)
        assess_readiness()  # the first report: nothing to compare with, no alert
        assess_readiness()  # the same verdicts: no alert
        assert not ReadinessAlert.objects.exists() and not mail.outbox

        # A theme release breaks the pixel: its last receipt is 3 hours old, and purchases
        # go on through the server lane alone.
        TrackedEvent.objects.update(browser_seen_at=timezone.now() - timedelta(hours=3))
        unseen = healthy_purchases("unseen", count=4)
        TrackedEvent.objects.filter(pk__in=[row.pk for row in unseen]).update(browser_seen_at=None)
        assess_readiness()
        # The theme is fixed: the pixel reports purchases again.
        TrackedEvent.objects.filter(pk__in=[row.pk for row in unseen]).update(
            browser_seen_at=timezone.now()
        )
        assess_readiness()

    assert [(a.market, a.old, a.new, a.status) for a in ReadinessAlert.objects.order_by("pk")] == [
        ("US", "ready", "not_ready", "sent"),
        ("US", "not_ready", "ready", "sent"),
    ]
    assert [m.subject for m in mail.outbox] == [
        "[Django] TikTok tracking: US is not_ready (was ready)",
        "[Django] TikTok tracking: US is ready (was not_ready)",
    ]
    assert "while 4 server purchases followed" in mail.outbox[0].body
    sent = [verified(headers, body) for _path, headers, body in receiver.received]
    assert [(a["market"], a["old"], a["new"]) for a in sent] == [
        ("US", "ready", "not_ready"),
        ("US", "not_ready", "ready"),
    ]
    assert sent[0]["reasons"][0].startswith("pixel receipts stopped at ")


@pytest.mark.django_db
def test_a_failed_webhook_is_retried_with_backoff_and_recorded(webhook):
    url, receiver = webhook.url, webhook
    receiver.answers = [503, 500]
    alert = ReadinessAlert.objects.create(market="DE", old="ready", new="not_ready")
    with tracking(READINESS={"ALERT_WEBHOOK_URL": url, "ALERT_WEBHOOK_SECRET": SECRET}):
        now = timezone.now()
        assert alerts.deliver_alerts(now) == 0
        alert.refresh_from_db()
        assert (alert.status, alert.attempts, alert.last_error) == ("pending", 1, "HTTP 503")
        assert alert.next_attempt_at == now + timedelta(seconds=60)
        assert alerts.deliver_alerts(now) == 0, "not due yet"
        assert alerts.deliver_alerts(now + timedelta(seconds=61)) == 0
        alert.refresh_from_db()
        assert alert.next_attempt_at == now + timedelta(seconds=61 + 120)
        assert alerts.deliver_alerts(now + timedelta(hours=1)) == 1
    alert.refresh_from_db()
    assert (alert.status, alert.attempts, alert.last_error) == ("sent", 3, "")
    assert len(receiver.received) == 3
    verified(*receiver.received[-1][1:])


@pytest.mark.django_db
def test_an_unreachable_webhook_fails_after_its_attempts_with_the_reason():
    alert = ReadinessAlert.objects.create(market="DE", old="ready", new="not_ready")
    with tracking(
        READINESS={"ALERT_WEBHOOK_URL": "http://127.0.0.1:9/x", "ALERT_WEBHOOK_SECRET": SECRET}
    ):
        when = timezone.now()
        for _ in range(alerts.MAX_ATTEMPTS):
            alerts.deliver_alerts(when)
            when += timedelta(days=1)
    alert.refresh_from_db()
    assert (alert.status, alert.attempts) == ("failed", alerts.MAX_ATTEMPTS)
    assert alert.last_error.startswith("ConnectionError")


def test_only_markets_whose_verdict_changed_raise_an_alert():
    def document(**verdicts):
        return {
            "markets": [{"market": m, "verdict": v, "reasons": [v]} for m, v in verdicts.items()]
        }

    before = document(US="ready", DE="caution")
    after = document(US="ready", DE="not_ready", FR="ready")
    assert alerts.changes(before, after) == [("DE", "caution", "not_ready", ["not_ready"])]


@pytest.mark.django_db
def test_a_shops_own_receiver_gets_the_change():
    seen = []

    def receiver(sender, market, old, new, reasons, alert, **kwargs):
        seen.append((market, old, new, alert.pk))

    readiness_changed.connect(receiver)
    try:
        with tracking(READINESS={"ALERT_MAIL": False}):
            alerts.record_changes(
                {"markets": [{"market": "US", "verdict": "ready", "reasons": []}]},
                {"markets": [{"market": "US", "verdict": "caution", "reasons": ["x"]}]},
            )
    finally:
        readiness_changed.disconnect(receiver)
    [alert] = ReadinessAlert.objects.all()
    assert seen == [("US", "ready", "caution", alert.pk)]
    assert alert.status == "not_configured", "no webhook set: nothing left to deliver"
    assert not mail.outbox, "ALERT_MAIL off"


def test_the_webhook_secret_is_never_in_the_recorded_settings():
    from tiktok_tracking import conf

    with tracking(
        READINESS={"ALERT_WEBHOOK_URL": "https://x.example", "ALERT_WEBHOOK_SECRET": SECRET}
    ):
        shown = conf.public_settings()
    assert SECRET not in json.dumps(shown)
    assert shown["READINESS"]["ALERT_WEBHOOK_SECRET"] == "set"


@pytest.mark.django_db
def test_the_admin_lists_alerts_read_only():
    from django.contrib.auth.models import User
    from django.test import Client

    ReadinessAlert.objects.create(market="DE", old="ready", new="not_ready", reasons=["why"])
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    page = client.get("/admin/tiktok_tracking/readinessalert/").content.decode()
    assert "DE" in page and "not_ready" in page
    assert client.get("/admin/tiktok_tracking/readinessalert/add/").status_code == 403


@pytest.mark.django_db
@pytest.mark.usefixtures("alert_runs_inline")
@override_settings(ADMINS=admins("admin@shop.example"))
def test_a_replaced_token_and_a_test_event_code_raise_one_config_alert_by_mail_and_webhook(
    webhook,
):
    url, receiver = webhook.url, webhook
    readiness = {"ALERT_WEBHOOK_URL": url, "ALERT_WEBHOOK_SECRET": SECRET}
    with tracking(PAID_ORDERS=None, READINESS=readiness):
        assess_readiness()  # the first report: nothing to compare with
        assess_readiness()
    # A deploy ships another token and a test event code left over from a debugging session.
    deployed = {"ACCESS_TOKEN": "another-access-token-9876543210", "TEST_EVENT_CODE": "TEST12345"}
    with tracking(PAID_ORDERS=None, READINESS=readiness, **deployed):
        assess_readiness()
        assess_readiness()  # the same settings again: nothing new
    with tracking(PAID_ORDERS=None, READINESS={**readiness, "MIN_ORDERS": 5}, **deployed):
        assess_readiness()  # a threshold is not a watched setting: recorded, no alert
    assert ConfigChange.objects.count() == 3
    [alert] = ReadinessAlert.objects.all()
    reasons = [
        "access token replaced",
        "TEST_EVENT_CODE set: TikTok files the server's events under its test tool, where ads "
        "and rules do not count them",
    ]
    assert (alert.kind, alert.market, alert.reasons, alert.status) == (
        "config_changed",
        "",
        reasons,
        "sent",
    )
    [message] = mail.outbox
    assert message.subject == "[Django] TikTok tracking: the tracking configuration changed"
    assert "- access token replaced" in message.body
    assert "another-access-token" not in message.body
    [(_path, headers, body)] = receiver.received
    sent = verified(headers, body)
    assert (sent["type"], sent["market"], sent["old"], sent["new"]) == (
        "config_changed",
        None,
        None,
        None,
    )
    assert sent["reasons"] == reasons


def test_the_watched_settings_are_named_in_words():
    from tiktok_tracking.config_log import token_digest, tracking_changes

    before = {
        "ACCESS_TOKEN": token_digest("first-token"),
        "PIXEL_ID": "CPIXEL1",
        "PIXELS": None,
        "ENABLED": True,
        "PURCHASE_EVENT": "Purchase",
        "CONSENT_OPT_IN_COUNTRIES": ["AT", "DE"],
        "TIMEOUT": 10.0,
    }
    after = {
        **before,
        "PIXEL_ID": "CPIXEL2",
        "ENABLED": False,
        "PURCHASE_EVENT": "CompletePayment",
        "CONSENT_OPT_IN_COUNTRIES": ["AT"],
        "TIMEOUT": 5.0,
    }
    assert tracking_changes(before, after) == [
        "PIXEL_ID changed from 'CPIXEL1' to 'CPIXEL2'",
        "server lane switched off (ENABLED = False)",
        "PURCHASE_EVENT changed from 'Purchase' to 'CompletePayment'",
        "consent policy: CONSENT_OPT_IN_COUNTRIES changed from AT, DE to AT",
    ]
    assert tracking_changes(before, {**before, "ACCESS_TOKEN": "not set"}) == [
        "access token removed"
    ]
    # A record from before tokens had a digest says only "set": no way to tell, no alert.
    assert tracking_changes({**before, "ACCESS_TOKEN": "set"}, before) == []
    assert token_digest("first-token") != token_digest("second-token")
    assert "first-token" not in token_digest("first-token")


def test_the_pixels_added_removed_or_given_another_token_are_named():
    from tiktok_tracking.config_log import token_digest, tracking_changes

    def pixels(*entries):
        return {"PIXELS": [{"PIXEL_ID": p, "ACCESS_TOKEN": token_digest(t)} for p, t in entries]}

    before = pixels(("CA", "token-a"), ("CB", "token-b"))
    after = pixels(("CA", "token-a2"), ("CC", "token-c"))
    assert tracking_changes(before, after) == [
        "pixel CC added",
        "pixel CB removed",
        "access token of pixel CA replaced",
    ]
