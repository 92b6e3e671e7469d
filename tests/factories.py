"""Plain-object orders and assertion helpers shared by the pure-core tests."""

from decimal import Decimal
from types import SimpleNamespace

import pytest

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
