"""Round trips to PostgreSQL per batch: what a worker on another host pays, each, twice over."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.conftest import skip_unless_required
from tests.factories import outbox_rows
from tests.latency_proxy import LatencyProxy, django_connection_through
from tiktok_tracking import delivery
from tiktok_tracking.models import ConsentRecord, DeliveryAttempt, TrackedEvent

Status = TrackedEvent.Status


@pytest.fixture
def through_a_proxy():
    """This process's connection to PostgreSQL through a proxy that counts round trips."""
    if connection.vendor != "postgresql":
        skip_unless_required(
            "needs PostgreSQL (DATABASE_URL=postgres://...): elsewhere the claim and the "
            "settling of a batch take the ORM's way, with more statements"
        )
    settings = connection.settings_dict
    upstream = (settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432))
    proxy = LatencyProxy(upstream, rtt_seconds=0)
    try:
        with django_connection_through(proxy.port) as through:
            through.ensure_connection()
            yield proxy
    finally:
        proxy.close()


@pytest.mark.django_db(transaction=True)
def test_a_batch_costs_the_worker_two_round_trips_consent_and_all(through_a_proxy, sandbox):
    # German buyers: the server lane needs each one's consent, read again at send time.
    rows = outbox_rows(5, prefix="far", country="DE")
    for number, row in enumerate(rows):
        TrackedEvent.objects.filter(pk=row.pk).update(
            visitor_id=f"visitor-{number}", consent_status=ConsentRecord.Status.GRANTED
        )
    earlier = timezone.now() - timedelta(minutes=5)
    for number in range(5):
        ConsentRecord.objects.create(
            visitor_id=f"visitor-{number}",
            status=ConsentRecord.Status.GRANTED,
            source="banner",
            policy_version="1",
            created_at=earlier,
        )
    # The first buyer withdrew after paying: the latest record wins over the checkout's.
    ConsentRecord.objects.create(
        visitor_id="visitor-0",
        status=ConsentRecord.Status.DENIED,
        source="banner",
        policy_version="1",
    )

    before = through_a_proxy.round_trips
    report = delivery.deliver_due_events(batch_size=1000, max_seconds=30)
    spent = through_a_proxy.round_trips - before

    assert (report.delivered, report.suppressed) == (4, 1)
    statuses = dict(TrackedEvent.objects.values_list("visitor_id", "status"))
    assert statuses.pop("visitor-0") == Status.SUPPRESSED
    assert set(statuses.values()) == {Status.DELIVERED}
    assert DeliveryAttempt.objects.count() == 4
    # The claim, which reads each visitor's latest consent and whether the archive holds the
    # event; the suppressed row's update; the answer, its attempt log and the four rows'
    # update in one statement; the claim that finds nothing more. The ORM's way took nine:
    # a consent query, and BEGIN, three statements and COMMIT for the answer.
    assert spent == 4
