"""The delivery log: one row per answer, one narrow row per event, and the migration to it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import migrate
from tests.factories import outbox_rows
from tiktok_tracking import delivery
from tiktok_tracking.models import DeliveryAnswer

BEFORE = [("tiktok_tracking", "0003_lean_outbox_and_archive")]
AFTER = [("tiktok_tracking", "0004_delivery_answers")]


@pytest.mark.django_db
def test_an_answer_for_many_events_is_written_once():
    rows = outbox_rows(5, prefix="log")
    delivery.log_attempts(
        [row.pk for row in rows],
        outcome="transient",
        batch_size=5,
        http_status=503,
        message="busy",
        request_id="req-1",
    )
    [answer] = DeliveryAnswer.objects.all()
    assert (answer.outcome, answer.http_status, answer.message) == ("transient", 503, "busy")
    assert sorted(answer.attempts.values_list("tracked_event_id", flat=True)) == sorted(
        row.pk for row in rows
    )
    # An event's history reads its answers through its attempts.
    assert [a.answer.request_id for a in rows[0].delivery_attempts.select_related("answer")] == [
        "req-1"
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("latest_schema_after")
def test_the_migration_gives_every_logged_attempt_its_answer():
    old_apps = migrate(BEFORE)
    try:
        Attempt = old_apps.get_model("tiktok_tracking", "DeliveryAttempt")
        then = timezone.now() - timedelta(hours=1)
        first = {"outcome": "transient", "batch_size": 3, "http_status": 503, "code": None}
        second = {"outcome": "delivered", "batch_size": 3, "http_status": 200, "code": 0}
        # Two requests for events 1-3 (a 503, then delivered) and one for event 4, whose
        # answer differs from the first only in its message.
        for pk in (1, 2, 3):
            Attempt.objects.create(tracked_event_id=pk, attempted_at=then, message="busy", **first)
            Attempt.objects.create(
                tracked_event_id=pk,
                attempted_at=then + timedelta(minutes=1),
                message="OK",
                request_id="req-2",
                duration_ms=61,
                **second,
            )
        Attempt.objects.create(tracked_event_id=4, attempted_at=then, message="other", **first)
        old = {
            row["pk"]: row
            for row in Attempt.objects.values(
                "pk", "tracked_event_id", "attempted_at", "message", "request_id", "duration_ms"
            )
        }
    finally:
        new_apps = migrate(AFTER)

    Answer = new_apps.get_model("tiktok_tracking", "DeliveryAnswer")
    Attempt = new_apps.get_model("tiktok_tracking", "DeliveryAttempt")
    assert Answer.objects.count() == 3
    assert Attempt.objects.count() == len(old) == 7
    for attempt in Attempt.objects.select_related("answer"):
        before = old[attempt.pk]
        assert attempt.tracked_event_id == before["tracked_event_id"]
        for name in ("attempted_at", "message", "request_id", "duration_ms"):
            assert getattr(attempt.answer, name) == before[name], name
    assert sorted(
        Answer.objects.get(message="OK").attempts.values_list("tracked_event_id", flat=True)
    ) == [1, 2, 3]
