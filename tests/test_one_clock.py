"""One clock: due times, leases and sweeps go by the database's clock, whatever the process's says.

Each test shifts this process's clock (``timezone.now``, which every time the app takes from
the process goes through) an hour or more off the database's, as a host whose clock drifted
or was set wrong would be, and checks that the worker, the sweeper and the resend neither stall
nor take what another worker holds. tests/faults/test_clock_skew.py runs real workers under
libfaketime.
"""

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from tests.factories import outbox_rows
from tiktok_tracking import archive, delivery
from tiktok_tracking.client import DELIVERED, TRANSIENT, Outcome
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.resend import resend_events

pytestmark = pytest.mark.django_db

Status = TrackedEvent.Status
HOUR = timedelta(hours=1)
# Room for the test's own statements between its reads of the clock.
SLACK = timedelta(seconds=2)


@pytest.fixture
def skew(monkeypatch):
    """``skew(offset)``: from now on this process's clock reads ``offset`` off the true time
    (the database's: on one machine, the same clock); ``skew.true_now()`` reads the true one."""
    true_now = timezone.now

    def shift(offset):
        monkeypatch.setattr(timezone, "now", lambda: true_now() + offset)

    shift.true_now = true_now
    return shift


def accepted_event_ids(sandbox):
    return [event["event_id"] for event in sandbox.events()]


def test_a_worker_an_hour_behind_still_delivers(sandbox, skew):
    outbox_rows(5)
    skew(-HOUR)
    report = delivery.deliver_due_events(max_seconds=0)
    assert report.delivered == 5
    assert set(TrackedEvent.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    # Each once, at the time it was sent, not an hour before it.
    assert sorted(accepted_event_ids(sandbox)) == [f"order_{i}" for i in range(5)]
    for delivered_at in TrackedEvent.objects.values_list("delivered_at", flat=True):
        assert abs(delivered_at - skew.true_now()) < SLACK


def test_a_worker_an_hour_ahead_takes_no_live_lease(sandbox, skew):
    outbox_rows(3)
    held = delivery.claim_due_events(10, lease_seconds=60)
    skew(HOUR)
    # The sweeper on the host ahead: the leases have 60 s to run, whatever its clock says.
    assert delivery.expire_leases() == 0
    assert delivery.deliver_due_events(max_seconds=0).claimed == 0
    assert sandbox.requests == []
    # The worker that holds them records its outcome, and it stands: nothing is sent again.
    skew(timedelta(0))
    delivery.record_outcome(held, Outcome(DELIVERED, 200, 0, event_count=3), delivery.DrainReport())
    assert set(TrackedEvent.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert delivery.expire_leases() == 0
    assert delivery.deliver_due_events(max_seconds=0).claimed == 0
    assert sandbox.requests == []


def test_a_worker_an_hour_ahead_holds_no_lease_longer_than_lease_seconds(skew):
    outbox_rows(2)
    skew(HOUR)
    claimed = delivery.claim_due_events(10, lease_seconds=6)
    assert len(claimed) == 2
    for row in TrackedEvent.objects.all():
        # Had it died now, its rows would come back 6 s on, not an hour and 6 s.
        assert row.lease_expires_at - skew.true_now() <= timedelta(seconds=6) + SLACK
        assert abs(row.claimed_at - skew.true_now()) < SLACK


@pytest.mark.parametrize("offset", [-HOUR, HOUR], ids=["behind", "ahead"])
def test_a_retry_set_by_a_skewed_worker_falls_due_after_its_backoff(skew, offset):
    outbox_rows(2)
    skew(offset)
    claimed = delivery.claim_due_events(10)
    started = skew.true_now()
    backoff = {"RETRY_BASE_DELAY": 30.0, "RETRY_MAX_DELAY": 30.0}
    with override_settings(TIKTOK_TRACKING={**settings.TIKTOK_TRACKING, **backoff}):
        delivery.record_outcome(
            claimed, Outcome(TRANSIENT, 503, None, event_count=2), delivery.DrainReport()
        )
    # 15-30 s on (the backoff with its jitter) by the true clock: neither at once (behind)
    # nor an hour late (ahead).
    for row in TrackedEvent.objects.all():
        assert row.status == Status.PENDING
        wait = row.next_attempt_at - started
        assert timedelta(seconds=15) - SLACK <= wait <= timedelta(seconds=30) + SLACK
    assert TrackedEvent.objects.due().count() == 0


def test_a_resend_from_a_process_an_hour_ahead_is_due_at_once(skew):
    [row] = outbox_rows(1)
    TrackedEvent.objects.filter(pk=row.pk).update(status=Status.FAILED)
    skew(HOUR)
    assert resend_events(TrackedEvent.objects.all()).requeued == 1
    # The workers, on the true clock, find it due now, not in an hour.
    skew(timedelta(0))
    assert [claimed.pk for claimed in delivery.claim_due_events(10)] == [row.pk]


def test_an_archive_sweep_ahead_of_the_database_moves_no_row_early(skew):
    outbox_rows(2)
    TrackedEvent.objects.update(status=Status.DELIVERED, updated_at=skew.true_now())
    skew(2 * HOUR)
    # Kept an hour: by the database's clock they were finished a moment ago.
    assert archive.archive_finished(retention_hours=1) == 0
    assert TrackedEvent.objects.count() == 2


def test_a_purge_ahead_of_the_database_keeps_what_delivery_still_may_need(skew):
    outbox_rows(2)
    TrackedEvent.objects.update(status=Status.DELIVERED, updated_at=skew.true_now())
    skew(timedelta(days=8))
    assert delivery.purge_personal_data(retention_days=7) == 0
    assert {row.payload["user"]["ip"] for row in TrackedEvent.objects.all()} == {"203.0.113.1"}


def test_a_row_due_this_very_moment_is_due_to_the_claim():
    from tiktok_tracking.sql import database_now

    outbox_rows(3)
    # Due at the database's time, to the microsecond: SQLite reads its clock to the
    # millisecond (Django 4.2's Now() to the second), and must not count such a row not due.
    TrackedEvent.objects.update(next_attempt_at=database_now())
    assert TrackedEvent.objects.due().count() == 3
    assert len(delivery.claim_due_events(10)) == 3


def test_the_database_clock_agrees_with_rows_stored_as_local_time():
    # USE_TZ = False stores local times: the database's clock is read as local time too.
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
        from tiktok_tracking.sql import database_now

        now = timezone.now()
        assert timezone.is_naive(now)
        assert abs(database_now() - now) < SLACK
        outbox_rows(2, now=now)
        assert TrackedEvent.objects.due().count() == 2
        TrackedEvent.objects.update(next_attempt_at=now + HOUR)
        assert TrackedEvent.objects.due().count() == 0
