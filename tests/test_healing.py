"""A paid order never ends without its event: placeholders rebuilt, the scan of paid orders."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from tests.shop.adapters import ShopOrderAdapter
from tests.shop.models import Order, OrderLine
from tiktok_tracking.healing import record_missing_purchases
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.recording import record_order_event
from tiktok_tracking.resend import resend_events
from tiktok_tracking.signals import payment_completed

pytestmark = pytest.mark.django_db

Status = TrackedEvent.Status


class UnreadableOrderAdapter(ShopOrderAdapter):
    """The shop's adapter while a bug keeps it from reading the order's total."""

    broken = True

    def value(self):
        if UnreadableOrderAdapter.broken:
            raise RuntimeError("the adapter's bug")
        return super().value()


@pytest.fixture
def unreadable_adapter(settings):
    UnreadableOrderAdapter.broken = True
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "ORDER_ADAPTER": f"{__name__}.UnreadableOrderAdapter",
    }
    yield UnreadableOrderAdapter
    UnreadableOrderAdapter.broken = True


def paid_order(number, *, created_at=None, paid=True):
    order = Order.objects.create(
        number=number,
        email="jane@example.com",
        country="US",
        total="20.00",
        paid=paid,
        created_at=created_at or timezone.now() - timedelta(hours=1),
    )
    OrderLine.objects.create(order=order, sku="SKU-1", name="Mug", quantity=1, price="20.00")
    return order


def test_failed_placeholder_is_rebuilt_when_the_signal_is_sent_again(
    unreadable_adapter, django_capture_on_commit_callbacks
):
    order = paid_order("P1")
    [placeholder] = payment_completed.send(sender=Order, order=order)[0][1]
    assert placeholder.status == Status.FAILED
    assert placeholder.payload == {}
    assert "the adapter's bug" in placeholder.last_error

    unreadable_adapter.broken = False
    with django_capture_on_commit_callbacks() as callbacks:
        [row] = payment_completed.send(sender=Order, order=order)[0][1]
    row.refresh_from_db()
    assert row.pk == placeholder.pk
    assert row.status == Status.PENDING
    assert row.last_error == ""
    assert row.payload["event_id"] == "order_P1"
    assert row.payload["properties"]["value"] == 20.0
    assert row.match_keys
    # Delivery is woken for the row, as for one recorded in full at once.
    assert callbacks


def test_failed_placeholder_does_not_block_a_resend_once_rebuilt(unreadable_adapter):
    order = paid_order("P2")
    [placeholder] = record_order_event("Purchase", order)
    assert resend_events(TrackedEvent.objects.filter(pk=placeholder.pk)).requeued == 0

    unreadable_adapter.broken = False
    record_order_event("Purchase", order)
    # Delivered and then failed for good: it can be sent again by hand.
    TrackedEvent.objects.filter(pk=placeholder.pk).update(status=Status.FAILED)
    assert resend_events(TrackedEvent.objects.filter(pk=placeholder.pk)).requeued == 1


def test_placeholder_still_unreadable_keeps_its_reason(unreadable_adapter):
    order = paid_order("P3")
    [first] = record_order_event("Purchase", order)
    [again] = record_order_event("Purchase", order)
    again.refresh_from_db()
    assert again.pk == first.pk
    assert again.status == Status.FAILED
    assert "the adapter's bug" in again.last_error


def test_scan_records_paid_orders_the_outbox_never_got():
    missing = paid_order("S1")
    recorded = paid_order("S2")
    record_order_event("Purchase", recorded)
    paid_order("S3", paid=False)

    report = record_missing_purchases()

    assert (report.scanned, report.recorded, report.unrecorded) == (2, 1, 0)
    [row] = TrackedEvent.objects.filter(order_id=missing.number)
    assert row.status == Status.PENDING
    assert row.payload["event_id"] == "order_S1"
    assert not TrackedEvent.objects.filter(order_id="S3").exists()
    assert TrackedEvent.objects.filter(order_id="S2").count() == 1
    # Once recorded, the next scan finds nothing to do.
    again = record_missing_purchases()
    assert (again.scanned, again.recorded) == (2, 0)
    assert TrackedEvent.objects.count() == 2


def test_scan_leaves_orders_inside_the_grace_and_outside_the_window():
    now = timezone.now()
    paid_order("G1", created_at=now - timedelta(seconds=30))
    paid_order("W1", created_at=now - timedelta(hours=7))
    paid_order("IN", created_at=now - timedelta(hours=2))
    report = record_missing_purchases(now=now)
    assert report.recorded == 1
    assert list(TrackedEvent.objects.values_list("order_id", flat=True)) == ["IN"]


def test_scan_rebuilds_placeholders(unreadable_adapter):
    order = paid_order("S4")
    record_order_event("Purchase", order)
    assert record_missing_purchases().unrecorded == 1

    unreadable_adapter.broken = False
    report = record_missing_purchases()
    assert report.recorded == 1
    [row] = TrackedEvent.objects.filter(order_id="S4")
    assert row.status == Status.PENDING
    assert row.payload["event_id"] == "order_S4"


def test_scan_without_paid_orders_does_nothing(settings):
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "PAID_ORDERS": None}
    paid_order("N1")
    assert record_missing_purchases() is None
    assert not TrackedEvent.objects.exists()


@override_settings()
def test_scan_counts_orders_whose_id_cannot_be_read(settings):
    paid_order("")
    report = record_missing_purchases()
    assert report.unreadable == 1


def test_scan_with_tracking_off_records_nothing(settings):
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "ENABLED": False}
    paid_order("OFF1")
    assert record_missing_purchases() is None
    assert not TrackedEvent.objects.exists()
