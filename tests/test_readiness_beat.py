"""Readiness alerts on a real beat and worker: ready -> not_ready -> ready sends exactly two."""

import email
import email.policy
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from tests.alert_endpoint import alert_endpoint, verified
from tests.conftest import wait_until
from tests.factories import outbox_rows
from tests.test_outbox import make_order, tracking
from tiktok_tracking import rollups
from tiktok_tracking.models import ReadinessAlert, ReadinessReport, TrackedEvent
from tiktok_tracking.readiness import store
from tiktok_tracking.schedule import READINESS_TASK_NAME, SWEEP_TASK_NAME, ensure_periodic_tasks

pytestmark = pytest.mark.integration

MARKET = "SE"
ADMIN = "readiness@shop.example"
SECRET = "beat-webhook-secret"
Status = TrackedEvent.Status
# What a checkout with an ad click sends: estimated match quality 6 of 10, above the caution.
MATCH_KEYS = rollups.key_mask("email", "ttclid", "ip", "user_agent")


@pytest.fixture
def webhook():
    with alert_endpoint() as server:
        yield server


@pytest.fixture
def mail_dir(celery_env, webhook, tmp_path):
    """Where the worker's mail lands; ``celery_env`` is the very dict start_worker and
    start_beat pass on, so the alert settings reach both processes (tests/settings.py)."""
    folder = tmp_path / "mail"
    celery_env.update(
        TIKTOK_TEST_ADMIN_EMAIL=ADMIN,
        TIKTOK_TEST_EMAIL_DIR=str(folder),
        TIKTOK_TEST_ALERT_WEBHOOK_URL=webhook.url,
        TIKTOK_TEST_ALERT_WEBHOOK_SECRET=SECRET,
    )
    return folder


def purchases(count, *, prefix, created, seen):
    """``count`` purchases of MARKET paid in the shop at ``created`` and delivered 3 s later
    (finished rows: the worker and the sweeper leave them alone); ``seen`` is when the
    pixel's receipt came, None for none."""
    for i in range(count):
        make_order(f"{prefix}{i}", country=MARKET, paid=True, created_at=created)
    rows = outbox_rows(count, prefix=prefix, now=created, country=MARKET)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Status.DELIVERED,
        created_at=created,
        updated_at=created,
        delivered_at=created + timedelta(seconds=3),
        browser_seen_at=seen,
        match_keys=MATCH_KEYS,
    )


def judged_every_second():
    """The readiness task as ASSESS_INTERVAL=1 schedules it; beat keeps only it and the
    sweeper, so no rollup or archive run moves the rows the verdict is read from."""
    with tracking(READINESS={"ASSESS_INTERVAL": 1}):
        ensure_periodic_tasks()
    PeriodicTask.objects.exclude(name__in=[READINESS_TASK_NAME, SWEEP_TASK_NAME]).update(
        enabled=False
    )
    assert PeriodicTask.objects.get(name=READINESS_TASK_NAME).interval.every == 1


def market_of(report):
    [market] = [m for m in report.document["markets"] if m["market"] == MARKET]
    return market


def latest_report_judging(verdict, after=0):
    """The latest stored report if it judges MARKET ``verdict`` and came after report ``after``."""
    report = store.latest()
    if report is not None and report.pk > after and market_of(report)["verdict"] == verdict:
        return report
    return None


def mails(folder):
    """The messages the worker's file backend wrote (one file per connection, each message
    followed by a line of 79 dashes)."""
    messages = []
    for path in sorted(folder.iterdir()) if folder.exists() else ():
        for text in path.read_text().split("-" * 79 + "\n"):
            if text.strip():
                messages.append(email.message_from_string(text, policy=email.policy.default))
    return messages


def test_beat_judges_a_market_ready_not_ready_ready_and_sends_two_alerts_by_mail_and_webhook(
    mail_dir, webhook, start_worker, start_beat
):
    now = timezone.now()
    # A sound market: 25 paid orders, each delivered and reported by the pixel a minute
    # after payment, four hours ago.
    paid = now - timedelta(hours=4)
    purchases(25, prefix="healthy-", created=paid, seen=paid + timedelta(minutes=1))
    [market] = [m for m in store.build_report()["markets"] if m["market"] == MARKET]
    assert (market["verdict"], market["reasons"]) == (
        "ready",
        ["coverage 100% (25 of 25 paid orders)"],
    )

    judged_every_second()
    start_worker()
    start_beat()
    ready = wait_until(
        lambda: latest_report_judging("ready"), timeout=30, message=f"{MARKET} judged ready"
    )

    # A theme release breaks the pixel: purchases go on through the server lane alone, and
    # its last receipt is four hours old.
    with transaction.atomic():
        purchases(3, prefix="unseen-", created=timezone.now() - timedelta(minutes=20), seen=None)
    silent = wait_until(
        lambda: latest_report_judging("not_ready", after=ready.pk),
        timeout=30,
        message=f"{MARKET} judged not_ready",
    )
    reason = market_of(silent)["reasons"][0]
    assert reason.startswith("pixel receipts stopped at ")
    assert reason.endswith("while 3 server purchases followed")

    # The theme is fixed: the pixel reports the next purchase again.
    with transaction.atomic():
        purchases(1, prefix="fixed-", created=timezone.now(), seen=timezone.now())
    back = wait_until(
        lambda: latest_report_judging("ready", after=silent.pk),
        timeout=30,
        message=f"{MARKET} judged ready again",
    )
    # More runs with the verdict unchanged must raise no alert.
    wait_until(
        lambda: ReadinessReport.objects.filter(pk__gt=back.pk).count() >= 3,
        timeout=30,
        message="three more readiness runs",
    )

    verdicts = [market_of(r)["verdict"] for r in ReadinessReport.objects.order_by("pk")]
    assert [v for i, v in enumerate(verdicts) if i == 0 or v != verdicts[i - 1]] == [
        "ready",
        "not_ready",
        "ready",
    ], verdicts

    # The first report raised none: it had nothing to compare with.
    alerts = list(ReadinessAlert.objects.order_by("pk"))
    assert [(a.market, a.old, a.new, a.status, a.attempts) for a in alerts] == [
        (MARKET, "ready", "not_ready", "sent", 1),
        (MARKET, "not_ready", "ready", "sent", 1),
    ]

    sent = mails(mail_dir)
    assert [m["To"] for m in sent] == [ADMIN, ADMIN]
    assert sorted(m["Subject"] for m in sent) == [
        f"[Django] TikTok tracking: {MARKET} is not_ready (was ready)",
        f"[Django] TikTok tracking: {MARKET} is ready (was not_ready)",
    ]
    [broken] = [m for m in sent if "is not_ready" in m["Subject"]]
    # Decoded: Django 6.1 writes the body quoted-printable, with soft line breaks.
    assert "while 3 server purchases followed" in broken.get_content()

    assert [path for path, _headers, _body in webhook.received] == ["/alerts", "/alerts"]
    posted = [verified(headers, body, SECRET) for _path, headers, body in webhook.received]
    assert [(p["id"], p["market"], p["old"], p["new"]) for p in posted] == [
        (alerts[0].pk, MARKET, "ready", "not_ready"),
        (alerts[1].pk, MARKET, "not_ready", "ready"),
    ]
    assert posted[0]["reasons"][0] == reason
