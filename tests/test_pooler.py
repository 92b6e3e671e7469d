"""Behind PgBouncer in transaction mode: the app's long reads hold no state across transactions.

Each transaction may run on another server connection, so a cursor must not outlive the
transaction that opened it: Django's ``DISABLE_SERVER_SIDE_CURSORS`` turns ``.iterator()``
into client-side chunked reads. These tests run in .ci/run's pooler pass
(``TIKTOK_TEST_TRANSACTION_POOLER=1`` and ``DATABASE_URL`` on PgBouncer's port).
"""

import os
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import outbox_rows
from tests.test_outbox import make_order
from tiktok_tracking import delivery, reconcile
from tiktok_tracking.models import TrackedEvent

POOLER_ENV = "TIKTOK_TEST_TRANSACTION_POOLER"
# More than one chunk of each read: purge reads 500 rows at a time, reconcile 2,000 orders.
ROWS = 2_100

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def behind_the_pooler():
    if os.environ.get(POOLER_ENV) != "1":
        pytest.skip(f"runs behind PgBouncer in transaction mode ({POOLER_ENV}=1: .ci/run's pass)")
    assert connection.vendor == "postgresql"
    assert connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True


@pytest.mark.django_db(transaction=True)
def test_the_purge_reads_its_rows_in_chunks_across_transactions():
    old = timezone.now() - timedelta(days=90)
    rows = outbox_rows(ROWS, prefix="pooled", now=old)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=TrackedEvent.Status.DELIVERED, updated_at=old
    )
    assert delivery.purge_personal_data() == ROWS
    assert not TrackedEvent.objects.filter(personal_data_purged_at__isnull=True).exists()
    kept = TrackedEvent.objects.values_list("payload", flat=True)
    assert not [payload for payload in kept if "ip" in payload["user"]]


@pytest.mark.django_db(transaction=True)
def test_reconcile_reads_every_paid_order_across_transactions():
    from tests.shop.models import Order

    for i in range(ROWS):
        make_order(f"P{i}", country="US", paid=True)
    paid = reconcile.scan_paid_orders(Order.objects.all())
    assert sum(paid.by_country.values()) == ROWS
