"""The lean outbox: finished rows move to the archive, and everything that reads them follows."""

import os
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from tests.factories import outbox_rows
from tests.test_outbox import make_order, pay
from tiktok_tracking import archive, checks, delivery, rollups
from tiktok_tracking.models import (
    ArchivedEvent,
    BrowserReceipt,
    DailyRollup,
    DeliveryAttempt,
    TrackedEvent,
)
from tiktok_tracking.receipts import record_receipt
from tiktok_tracking.reconcile import recorded_counts

Status = TrackedEvent.Status
PIXEL = "CTESTPIXEL0001"
ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")


def age(rows, hours, now=None):
    """Make ``rows`` last change ``hours`` ago (and be created then)."""
    then = (now or timezone.now()) - timedelta(hours=hours)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        updated_at=then, created_at=then
    )


@pytest.mark.django_db
def test_finished_rows_past_the_retention_move_with_their_attempts_and_the_rest_stay(sandbox):
    rows = outbox_rows(6, prefix="old")
    delivery.deliver_due_events()
    TrackedEvent.objects.filter(event_id="old_1").update(status=Status.FAILED)
    TrackedEvent.objects.filter(event_id="old_2").update(status=Status.SUPPRESSED)
    TrackedEvent.objects.filter(event_id="old_3").update(status=Status.PENDING)
    TrackedEvent.objects.filter(event_id="old_4").update(status=Status.SENDING)
    age(rows, 73)
    recent = outbox_rows(2, prefix="new")
    delivery.deliver_due_events()
    before = {row.pk: row for row in TrackedEvent.objects.filter(event_id__startswith="old_")}

    moved = archive.archive_finished()

    assert moved == 4
    assert set(ArchivedEvent.objects.values_list("event_id", flat=True)) == {
        "old_0",
        "old_1",
        "old_2",
        "old_5",
    }
    # In flight, or changed since (old_3 was sent again just now), or recent: still there.
    assert set(TrackedEvent.objects.values_list("event_id", flat=True)) == {
        "old_3",
        "old_4",
        *(row.event_id for row in recent),
    }
    for archived in ArchivedEvent.objects.all():
        original = before[archived.pk]
        for name in archive.SHARED_FIELDS:
            assert getattr(archived, name) == getattr(original, name), name
    # The attempts keep pointing at the event, under the id the archive kept.
    delivered = ArchivedEvent.objects.get(event_id="old_0")
    assert DeliveryAttempt.objects.filter(tracked_event_id=delivered.pk).count() == 1
    assert archive.archive_finished() == 0


@pytest.mark.django_db
def test_archiving_moves_any_number_of_rows_in_chunks():
    rows = outbox_rows(25, prefix="bulk")
    TrackedEvent.objects.update(status=Status.DELIVERED)
    age(rows, 100)
    assert archive.archive_finished(chunk_size=7) == 25
    assert not TrackedEvent.objects.exists()
    assert ArchivedEvent.objects.count() == 25


@pytest.mark.django_db
def test_a_payment_signalled_again_after_its_event_was_archived_is_sent_once(sandbox):
    order = make_order("A1")
    pay(order)
    delivery.deliver_due_events()
    row = TrackedEvent.objects.get()
    age([row], 80)
    assert archive.archive_finished() == 1
    sandbox.reset()

    pay(order)  # a webhook retried days later: the outbox no longer sees the first row
    report = delivery.deliver_due_events()

    assert report.duplicates == 1 and report.delivered == 0
    assert sandbox.requests == []
    assert not TrackedEvent.objects.exists()
    assert ArchivedEvent.objects.get().event_id == "order_A1"


@pytest.mark.django_db
def test_a_twin_never_sent_is_dropped_when_archived_and_the_first_event_stands():
    [row] = outbox_rows(1, prefix="twin")
    TrackedEvent.objects.update(status=Status.DELIVERED, last_request_id="first")
    age([row], 80)
    archive.archive_finished()
    # Recorded again and suppressed (consent withdrawn since): never claimed by a worker.
    [twin] = outbox_rows(1, prefix="twin")
    TrackedEvent.objects.update(status=Status.SUPPRESSED)
    age([twin], 80)
    assert archive.archive_finished() == 1
    assert not TrackedEvent.objects.exists()
    assert ArchivedEvent.objects.get().last_request_id == "first"


@pytest.mark.django_db
def test_a_late_browser_receipt_marks_the_archived_event():
    [row] = outbox_rows(1, prefix="late")
    TrackedEvent.objects.update(status=Status.DELIVERED)
    age([row], 80)
    archive.archive_finished()
    assert record_receipt(PIXEL, "Purchase", "late_0")
    assert ArchivedEvent.objects.get().browser_seen_at is not None
    assert BrowserReceipt.objects.count() == 1


@pytest.mark.django_db
def test_reconcile_and_rollups_count_the_outbox_and_the_archive_together():
    now = timezone.now()
    rows = outbox_rows(5, prefix="day")
    TrackedEvent.objects.update(status=Status.DELIVERED)
    age(rows[:3], 80, now)
    archive.archive_finished(now=now)
    # Two rows of that day still in the outbox (their last change was recent).
    then = now - timedelta(hours=80)
    TrackedEvent.objects.update(created_at=then)
    assert ArchivedEvent.objects.count() == 3 and TrackedEvent.objects.count() == 2

    counts = recorded_counts(then - timedelta(hours=1), now)
    assert counts == {("US", Status.DELIVERED): 5}

    day = timezone.localdate(then)
    rollups.rebuild_days([day])
    rolled = DailyRollup.objects.get(day=day, event="Purchase")
    assert rolled.events == 5


@pytest.mark.django_db
def test_the_archive_admin_lists_filters_and_shows_attempts_and_the_order_panel_both(sandbox):
    rows = outbox_rows(3, prefix="adm")
    delivery.deliver_due_events()
    age(rows[:2], 80)
    archive.archive_finished()
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    base = "/admin/tiktok_tracking/archivedevent/"
    for query in (
        "",
        "status=delivered",
        "verdict=server_only",
        "country=US",
        "event=Purchase",
        "last_code=0",
        "q=adm_0",
    ):
        response = client.get(f"{base}?{query}")
        assert response.status_code == 200, query
    assert "adm_0" in client.get(base).content.decode()
    archived = ArchivedEvent.objects.get(event_id="adm_0")
    detail = client.get(f"{base}{archived.pk}/change/").content.decode()
    assert "Delivered" in detail and "attempted at" in detail
    # Read only: no actions, no resend.
    assert 'name="action"' not in client.get(base).content.decode()
    outbox = client.get("/admin/tiktok_tracking/trackedevent/?q=adm_2").content.decode()
    assert "adm_2" in outbox


def test_the_retention_must_cover_the_dedup_window_and_the_receipts(settings):
    def errors(**overrides):
        settings.TIKTOK_TRACKING = {**base, **overrides}
        return [error.id for error in checks._check_outbox_retention()]

    base = dict(settings.TIKTOK_TRACKING)
    assert errors() == []
    assert errors(OUTBOX_RETENTION_HOURS=47) == ["tiktok_tracking.E018"]
    assert errors(OUTBOX_RETENTION_HOURS="72") == ["tiktok_tracking.E018"]
    assert errors(OUTBOX_RETENTION_HOURS=60, RECEIPT_MAX_AGE_SECONDS=3 * 24 * 3600) == [
        "tiktok_tracking.E018"
    ]


@pytest.mark.django_db
def test_the_outbox_over_simulated_days_holds_only_the_retention_window():
    start = timezone.now() - timedelta(days=10)
    per_day = 20
    for day in range(10):
        now = start + timedelta(days=day)
        outbox_rows(per_day, prefix=f"d{day}", now=now)
        # Delivered the day they were recorded.
        TrackedEvent.objects.filter(event_id__startswith=f"d{day}_").update(
            status=Status.DELIVERED, created_at=now, updated_at=now
        )
        archive.archive_finished(now=now)
        # 72 h: today's rows and those of the three days before, never more.
        assert TrackedEvent.objects.count() == per_day * min(day + 1, 4)
    assert ArchivedEvent.objects.count() == per_day * 6


@pytest.mark.skipif(not ON_POSTGRESQL, reason="reads PostgreSQL's catalog of the outbox's indexes")
@pytest.mark.django_db
def test_the_outbox_carries_only_the_indexes_delivery_needs():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s",
            [TrackedEvent._meta.db_table],
        )
        names = {row[0] for row in cursor.fetchall()}
    assert names == {
        f"{TrackedEvent._meta.db_table}_pkey",
        "tiktok_tracking_one_row_per_event",
        "tiktok_tracking_due",
        "tiktok_tracking_leased",
    }


@pytest.mark.django_db
def test_the_archive_task_is_scheduled_and_runs():
    from django_celery_beat.models import PeriodicTask

    from tiktok_tracking import tasks

    call_command("migrate", verbosity=0)
    assert PeriodicTask.objects.filter(task="tiktok_tracking.archive_finished").exists()
    rows = outbox_rows(2, prefix="task")
    TrackedEvent.objects.update(status=Status.DELIVERED)
    age(rows, 80)
    tasks.archive_finished()
    assert ArchivedEvent.objects.count() == 2
