"""Two readiness runs at once (two beats by accident): each change alerts once, posts once.

The runs are interleaved by hand, at the very point where two real processes would cross, so
each test fails for certain without the guard it proves: the report's unique ``previous``
(``store.assess``) and the alert's claim before its POST (``alerts.claim``).
"""

from datetime import timedelta

import pytest
import requests
from django.core import mail
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from tests.alert_endpoint import alert_endpoint, verified
from tests.settings import admins
from tests.test_outbox import tracking
from tests.test_readiness_alerts import healthy_purchases
from tiktok_tracking.models import ReadinessAlert, ReadinessReport, TrackedEvent
from tiktok_tracking.readiness import alerts, store

SECRET = "overlap-webhook-secret"


@pytest.fixture
def webhook():
    with alert_endpoint() as server:
        yield server


def break_the_pixel():
    """The pixel's last receipt is 3 hours old and four purchases went by without it."""
    TrackedEvent.objects.update(browser_seen_at=timezone.now() - timedelta(hours=3))
    unseen = healthy_purchases("unseen", count=4)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in unseen]).update(browser_seen_at=None)


@pytest.mark.django_db
@override_settings(ADMINS=admins("admin@shop.example"))
def test_two_runs_that_read_the_same_report_raise_each_alert_once(monkeypatch):
    readiness = {"ALERT_MAIL": True}
    with tracking(PAID_ORDERS=None, READINESS=readiness):
        healthy_purchases("before")
        first = store.assess()
    break_the_pixel()
    deployed = {"TEST_EVENT_CODE": "TEST12345"}

    # Run A reads the latest report and computes its own; while it computes, run B (the
    # other beat's) reads the same latest report, computes and stores first.
    computing = store.build_report
    other_run = []

    def build_while_the_other_run_stores(*args, **kwargs):
        document = computing(*args, **kwargs)
        if not other_run:
            other_run.append("started")
            other_run.append(store.assess())
        return document

    monkeypatch.setattr(store, "build_report", build_while_the_other_run_stores)
    with tracking(PAID_ORDERS=None, READINESS=readiness, **deployed):
        late = store.assess()

    raised = [(a.kind, a.market, a.old, a.new) for a in ReadinessAlert.objects.order_by("pk")]
    assert raised == [
        ("config_changed", "", "", ""),
        ("readiness_changed", "US", "ready", "not_ready"),
    ]
    assert [m.subject for m in mail.outbox] == [
        "[Django] TikTok tracking: the tracking configuration changed",
        "[Django] TikTok tracking: US is not_ready (was ready)",
    ]
    stored = other_run[1]
    assert stored is not None and stored.previous == first
    assert late is None, "the run that stored second keeps no report"
    assert list(ReadinessReport.objects.order_by("pk")) == [first, stored]

    # The next run goes on from the report that was kept.
    monkeypatch.setattr(store, "build_report", computing)
    with tracking(PAID_ORDERS=None, READINESS=readiness, **deployed):
        following = store.assess()
    assert following.previous == stored
    assert ReadinessAlert.objects.count() == 2


@pytest.mark.django_db
def test_no_two_reports_are_compared_with_the_same_one():
    first = ReadinessReport.objects.create(document={})
    ReadinessReport.objects.create(document={}, previous=first)
    with pytest.raises(IntegrityError), transaction.atomic():
        ReadinessReport.objects.create(document={}, previous=first)
    # Two first reports (nothing to compare with) may both be kept: neither raises an alert.
    ReadinessReport.objects.create(document={})
    ReadinessReport.objects.create(document={})


# A committing test: the reference to the dropped report fails when the report commits.
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_previous_report_was_dropped_meanwhile_keeps_nothing(monkeypatch):
    with tracking(PAID_ORDERS=None):
        healthy_purchases("before")
        store.assess()
    computing = store.build_report

    def build_while_the_report_is_dropped(*args, **kwargs):
        document = computing(*args, **kwargs)
        ReadinessReport.objects.all().delete()
        return document

    monkeypatch.setattr(store, "build_report", build_while_the_report_is_dropped)
    with tracking(PAID_ORDERS=None):
        assert store.assess() is None
    assert not ReadinessReport.objects.exists()


class OverlappingSession(requests.Session):
    """The first POST happens while another run (the other beat's worker) delivers too."""

    def __init__(self):
        super().__init__()
        self.other_run_sent = None

    def post(self, *args, **kwargs):
        if self.other_run_sent is None:
            self.other_run_sent = alerts.deliver_alerts(session=requests.Session())
        return super().post(*args, **kwargs)


@pytest.mark.django_db
def test_two_runs_delivering_at_once_post_each_alert_once(webhook):
    pending = [
        ReadinessAlert.objects.create(
            market=market, old="ready", new="not_ready", status=ReadinessAlert.Status.PENDING
        )
        for market in ("US", "DE", "FR")
    ]
    readiness = {"ALERT_WEBHOOK_URL": webhook.url, "ALERT_WEBHOOK_SECRET": SECRET}
    session = OverlappingSession()
    with tracking(READINESS=readiness):
        sent = alerts.deliver_alerts(session=session)

    posted = sorted(
        verified(headers, body, SECRET)["id"] for _path, headers, body in webhook.received
    )
    assert posted == [alert.pk for alert in pending]
    # The other run found the oldest alert in flight, and so posted none: one POST at a time.
    assert (sent, session.other_run_sent) == (3, 0)
    assert set(ReadinessAlert.objects.values_list("status", "attempts")) == {("sent", 1)}


class KilledMidPost(requests.Session):
    def post(self, *args, **kwargs):
        raise SystemExit("the worker was killed while posting")


@pytest.mark.django_db
def test_an_alert_whose_run_died_mid_post_is_posted_once_its_claim_has_run_out(webhook):
    alert = ReadinessAlert.objects.create(
        market="US", old="ready", new="not_ready", status=ReadinessAlert.Status.PENDING
    )
    readiness = {"ALERT_WEBHOOK_URL": webhook.url, "ALERT_WEBHOOK_SECRET": SECRET}
    with tracking(READINESS=readiness):
        with pytest.raises(SystemExit):
            alerts.deliver_alerts(session=KilledMidPost())
        alert.refresh_from_db()
        assert (alert.status, alert.attempts) == ("pending", 1)
        assert alerts.deliver_alerts() == 0, "claimed: no other run posts it meanwhile"
        later = timezone.now() + timedelta(seconds=alerts.FIRST_RETRY_SECONDS + 1)
        assert alerts.deliver_alerts(later) == 1
    alert.refresh_from_db()
    assert (alert.status, alert.attempts) == ("sent", 2)
    assert len(webhook.received) == 1


@pytest.mark.django_db
def test_a_report_stamped_ahead_by_a_fast_clock_does_not_stop_the_runs_after_it():
    # A host whose clock runs a minute ahead stored the first report; another host compared
    # its report with it, stamped by a clock that is right.
    ahead = ReadinessReport.objects.create(
        document={}, computed_at=timezone.now() + timedelta(minutes=1)
    )
    compared = ReadinessReport.objects.create(
        document={}, computed_at=timezone.now(), previous=ahead
    )
    assert store.latest() == compared
    with tracking(PAID_ORDERS=None):
        following = store.assess()
    assert following is not None and following.previous == compared
