"""The dedup truth table: a row's verdict, the admin's filter and the counted groups agree."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tiktok_tracking.dedup import (
    BROWSER_ONLY,
    FAILED,
    MERGED,
    PENDING,
    SERVER_ONLY,
    SUPPRESSED,
    VERDICTS,
    dedup_verdict,
    verdict_counts,
    verdict_filter,
)
from tiktok_tracking.models import TrackedEvent

STATUSES = [choice.value for choice in TrackedEvent.Status]


@pytest.mark.parametrize(
    ("status", "seen", "verdict"),
    [
        ("delivered", True, MERGED),
        ("delivered", False, SERVER_ONLY),
        ("pending", True, PENDING),
        ("sending", False, PENDING),
        ("failed", True, BROWSER_ONLY),
        ("failed", False, FAILED),
        ("suppressed", True, BROWSER_ONLY),
        ("suppressed", False, SUPPRESSED),
    ],
)
def test_the_verdict_of_a_row(status, seen, verdict):
    assert dedup_verdict(status, seen) == verdict


@pytest.mark.django_db
def test_every_row_is_selected_by_the_filter_of_its_own_verdict_and_no_other():
    now = timezone.now()
    for index, status in enumerate(STATUSES):
        for seen in (True, False):
            TrackedEvent.objects.create(
                pixel_id="P",
                event="Purchase",
                event_id=f"{status}_{seen}",
                order_id=str(index),
                status=status,
                payload={},
                event_time=now,
                browser_seen_at=now - timedelta(minutes=1) if seen else None,
            )
    for row in TrackedEvent.objects.all():
        own = dedup_verdict(row.status, row.browser_seen_at is not None)
        for verdict in VERDICTS:
            selected = TrackedEvent.objects.filter(verdict_filter(verdict), pk=row.pk).exists()
            assert selected == (verdict == own), (row.status, row.browser_seen_at, verdict)


def test_counted_groups_add_up_by_verdict():
    groups = [
        {"status": "delivered", "browser_seen": True, "events": 3},
        {"status": "delivered", "browser_seen": False, "events": 2},
        {"status": "sending", "browser_seen": True, "events": 1},
        {"status": "failed", "browser_seen": True, "events": 4},
    ]
    assert verdict_counts(groups) == {MERGED: 3, SERVER_ONLY: 2, PENDING: 1, BROWSER_ONLY: 4}
