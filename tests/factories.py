"""Plain-object orders and assertion helpers shared by the pure-core tests."""

from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone

from tiktok_tracking.exceptions import InvalidOrderData


def make_order(**overrides):
    """An order as a shop without Django models might pass it: plain attributes."""
    attributes = {
        "order_id": 1007,
        "total": Decimal("89.99"),
        "currency": "usd",
        "items": [SimpleNamespace(sku="SKU-123", name="Mug", quantity=1, price=Decimal("89.99"))],
        "email": " Jane@Example.com ",
        "phone": "+1 (415) 555-0100",
        "customer_id": 42,
        "country": "us",
    }
    attributes.update(overrides)
    return SimpleNamespace(**attributes)


def assert_rejected(call, field):
    """``call()`` raises InvalidOrderData naming ``field``; returns the error."""
    with pytest.raises(InvalidOrderData) as caught:
        call()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    return caught.value


def outbox_rows(count, *, prefix="order", now=None, pixel_id="CTESTPIXEL0001", country="US"):
    """``count`` pending Purchase rows due ``now``, event ids ``<prefix>_<i>`` and order ids
    ``<i>``, with the raw ip and user agent a checkout would have given them; returned in
    order."""
    from tiktok_tracking.models import TrackedEvent

    now = now or timezone.now()
    TrackedEvent.objects.bulk_create(
        [
            TrackedEvent(
                pixel_id=pixel_id,
                event="Purchase",
                event_id=f"{prefix}_{i}",
                order_id=str(i),
                payload={
                    "event": "Purchase",
                    "event_time": int(now.timestamp()),
                    "event_id": f"{prefix}_{i}",
                    "user": {"ip": "203.0.113.1", "user_agent": "UA", "ttclid": "c"},
                    "properties": {"currency": "USD", "value": 1.5, "order_id": str(i)},
                },
                event_time=now,
                next_attempt_at=now,
                country=country,
            )
            for i in range(count)
        ]
    )
    return list(TrackedEvent.objects.filter(event_id__startswith=f"{prefix}_").order_by("pk"))


def delivered_purchase_rows(order_ids, countries=("US",), pixel_id="CTESTPIXEL0001"):
    """Delivered Purchase rows of ``order_ids`` (event id ``Purchase_<id>``), their countries
    taken in turn from ``countries``; inserted in bulk, none returned."""
    from tiktok_tracking.models import TrackedEvent

    now = timezone.now()
    TrackedEvent.objects.bulk_create(
        (
            TrackedEvent(
                pixel_id=pixel_id,
                event="Purchase",
                event_id=f"Purchase_{order_id}",
                order_id=order_id,
                payload={},
                event_time=now,
                status=TrackedEvent.Status.DELIVERED,
                country=countries[i % len(countries)],
            )
            for i, order_id in enumerate(order_ids)
        ),
        batch_size=5000,
    )


def delivered_purchases(market, prefix, count, *, seen):
    """``count`` orders of ``market`` paid now, their purchases delivered now (finished rows,
    which workers and sweepers leave alone), the pixel's receipt ``seen`` or not; returns the
    order numbers."""
    from tests.test_outbox import make_order
    from tiktok_tracking import rollups
    from tiktok_tracking.models import TrackedEvent

    now = timezone.now()
    numbers = [f"{prefix}{index}" for index in range(count)]
    for number in numbers:
        make_order(number, country=market, paid=True, created_at=now)
    rows = outbox_rows(count, prefix=prefix, now=now, country=market)
    for row, number in zip(rows, numbers, strict=True):
        TrackedEvent.objects.filter(pk=row.pk).update(
            order_id=number,
            status=TrackedEvent.Status.DELIVERED,
            delivered_at=now,
            browser_seen_at=now if seen else None,
            match_keys=rollups.key_mask("email", "ttclid", "ip", "user_agent"),
        )
    return numbers
