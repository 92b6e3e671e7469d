"""A shop's own test of its TikTok tracking, written with tiktok_tracking.testing."""

from decimal import Decimal

import pytest

from tests.shop.models import Order
from tiktok_tracking.testing import thank_you_event_ids


@pytest.fixture
def shopper(client):
    # The test shop reads the visitor's country from a cookie (its COUNTRY_RESOLVER).
    client.cookies["country"] = "US"
    return client


def place_and_pay(client, number, **fields):
    client.post("/checkout/", {"number": number, "total": "89.99", **fields})
    client.post(f"/pay/{number}/")
    return Order.objects.get(number=number)


@pytest.mark.django_db
def test_paying_an_order_tracks_one_purchase_in_both_lanes(shopper, tiktok_recorder):
    order = place_and_pay(shopper, "1001", email="ada@example.com")

    # The server lane: recorded with the payment, sent by the worker (here, in place).
    tiktok_recorder.deliver()
    row = tiktok_recorder.assert_purchase_tracked(order, value=Decimal("89.99"), currency="USD")
    [sent] = tiktok_recorder.events("Purchase")
    assert sent["event_id"] == row.event_id

    # The browser lane: the thank-you page tracks the same purchase under the same event_id,
    # so TikTok counts it once.
    page = shopper.get(f"/thanks/{order.number}/")
    assert thank_you_event_ids(page) == [row.event_id]


@pytest.mark.django_db
def test_an_order_from_an_opt_in_country_without_consent_sends_nothing(client, tiktok_recorder):
    client.cookies["country"] = "DE"
    order = place_and_pay(client, "1002", country="DE")

    tiktok_recorder.deliver()
    tiktok_recorder.assert_nothing_sent()
    with pytest.raises(AssertionError, match="is suppressed"):
        tiktok_recorder.assert_purchase_tracked(order)
