"""Upsells and renewals: their own event_ids, only their own value, both lanes in step."""

import datetime
import json
import re
from decimal import Decimal

import pytest
from django.db import transaction
from django.template import Context, Template
from django.test import Client, RequestFactory

from tests.shop.models import Order, OrderLine
from tiktok_tracking import delivery
from tiktok_tracking.charges import Charge, apply_charge, renewal, upsell
from tiktok_tracking.events import OrderFacts
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.hashing import hash_email
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.signals import payment_completed
from tiktok_tracking.visitor import get_visitor

Status = TrackedEvent.Status
UPSELL_LINES = [{"content_id": "SKU-9", "content_name": "Saucer", "quantity": 2, "price": "9.50"}]


def make_order(number):
    order = Order.objects.create(
        number=number,
        email="Buyer@Example.com",
        country="US",
        currency="EUR",
        total=Decimal("89.99"),
    )
    OrderLine.objects.create(order=order, sku="SKU-1", name="Mug", quantity=1, price=order.total)
    return order


def pay(order, **kwargs):
    with transaction.atomic():
        return payment_completed.send(sender=Order, order=order, **kwargs)


def row(event_id):
    return TrackedEvent.objects.get(event_id=event_id)


FACTS = OrderFacts("7", Decimal("89.99"), "EUR", ({"content_id": "SKU-1", "quantity": 1},))


# The pure part --------------------------------------------------------------------------------


def test_upsells_and_renewals_have_conventional_suffixes():
    assert upsell(1, "19.00").suffix == "upsell_1"
    assert renewal(3, "9.99").suffix == "renewal_3"
    assert renewal(datetime.date(2026, 12, 1), "9.99").suffix == "renewal_2026-12-01"
    moment = datetime.datetime(2027, 1, 1, 8, 30, tzinfo=datetime.timezone.utc)
    assert renewal(moment, "9.99").suffix == "renewal_2027-01-01"
    for bad in (0, -1, True, "2", 1.5):
        with pytest.raises(InvalidOrderData, match="must be a positive integer"):
            upsell(bad, "1")


def test_a_charge_replaces_value_and_contents_but_keeps_the_customer_and_order():
    facts = OrderFacts("7", Decimal("89.99"), "EUR", (), email_sha256=hash_email("a@b.example"))
    charged = apply_charge(facts, upsell(1, "19.00", contents=UPSELL_LINES))
    assert charged.value == Decimal("19.00")
    assert charged.currency == "EUR"
    assert charged.contents == (
        {"content_id": "SKU-9", "content_name": "Saucer", "quantity": 2, "price": Decimal("9.50")},
    )
    assert (charged.order_id, charged.email_sha256) == ("7", facts.email_sha256)
    assert apply_charge(FACTS, renewal(2, 5, currency="usd")).currency == "USD"


@pytest.mark.parametrize(
    ("charge", "field"),
    [
        (Charge("upsell_1", "-1"), "charge.value"),
        (Charge("upsell_1", float("nan")), "charge.value"),
        (Charge("upsell_1", "1", currency="EURO"), "charge.currency"),
        (Charge("upsell_1", "1", contents=[{"content_id": "A"}]), "charge.contents.0.price"),
        (Charge("upsell_1", "1", contents="SKU"), "charge.contents"),
    ],
)
def test_bad_charges_name_the_field(charge, field):
    with pytest.raises(InvalidOrderData) as info:
        apply_charge(FACTS, charge)
    assert info.value.field == field


# The server lane ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_upsell_is_its_own_purchase_with_only_its_own_value():
    order = make_order("U1")
    pay(order)
    pay(order, charge=upsell(1, "19.00", contents=UPSELL_LINES))
    pay(order, charge=upsell(1, "19.00", contents=UPSELL_LINES))  # the webhook, retried
    first, extra = row("order_U1"), row("order_U1_upsell_1")
    assert TrackedEvent.objects.count() == 2
    assert first.payload["properties"]["value"] == 89.99
    assert extra.payload["properties"] == {
        "currency": "EUR",
        "value": 19.0,
        "content_type": "product",
        "contents": [
            {"content_id": "SKU-9", "content_name": "Saucer", "quantity": 2, "price": 9.5}
        ],
        "order_id": "U1",
    }
    assert extra.payload["user"]["email"] == first.payload["user"]["email"]
    assert extra.status == Status.PENDING


@pytest.mark.django_db
def test_a_renewal_from_a_cron_sends_what_the_checkout_captured():
    shopper = Client()
    shopper.cookies["country"] = "US"
    shopper.post("/checkout/?ttclid=click-42", {"number": "R1", "email": "a@example.com"})
    order = Order.objects.get(number="R1")
    pay(order)
    # Months later, a cron charges the renewal: no request, no browser.
    pay(order, charge=renewal(2, "9.99"))
    renewed = row("order_R1_renewal_2")
    assert renewed.payload["user"]["ttclid"] == "click-42"
    assert renewed.payload["properties"]["value"] == 9.99
    assert renewed.payload["properties"]["contents"] == []
    assert renewed.browser_seen_at is None


@pytest.mark.django_db
def test_a_bad_charge_is_recorded_as_failed_and_the_payment_commits():
    order = make_order("U2")
    pay(order, charge=upsell(1, "-5"))
    order.refresh_from_db()
    failed = row("order_U2_upsell_1")
    assert failed.status == Status.FAILED
    assert failed.last_error == "Invalid order data: charge.value: must not be negative, got -5"


@pytest.mark.django_db
def test_a_charge_and_a_different_suffix_conflict():
    order = make_order("U3")
    pay(order, charge=upsell(1, "5"), event_id_suffix="upsell_2")
    [failed] = TrackedEvent.objects.all()
    assert failed.status == Status.FAILED
    assert "differs from the charge's suffix 'upsell_1'" in failed.last_error
    # The same suffix twice is no conflict.
    pay(order, charge=upsell(1, "5"), event_id_suffix="upsell_1")
    assert row("order_U3_upsell_1").status == Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_order_upsell_and_renewal_reach_tiktok_as_three_purchases(sandbox, settings):
    order = make_order("T1")
    pay(order)
    pay(order, charge=upsell(1, "19.00", contents=UPSELL_LINES))
    pay(order, charge=renewal(datetime.date(2026, 12, 24), "89.99"))
    report = delivery.deliver_due_events(max_seconds=5)
    assert report.delivered == 3
    events = {
        item["event_id"]: item["properties"]["value"]
        for record in sandbox.requests
        for item in record["body"]["data"]
        if record["answer"]["code"] == 0
    }
    assert events == {
        "order_T1": 89.99,
        "order_T1_upsell_1": 19.0,
        "order_T1_renewal_2026-12-24": 89.99,
    }


# The browser lane -----------------------------------------------------------------------------


def render(source, **context):
    request = RequestFactory().get("/upsell/thanks/")
    request.COOKIES["country"] = "US"
    get_visitor(request)
    return Template("{% load tiktok_tracking %}" + source).render(
        Context({"request": request, **context})
    )


def tracked(html):
    """``(properties, options)`` of the page's ttq.track call."""
    match = re.search(r'ttq\.track\("Purchase", (\{.*\}), (\{.*\})\);', html)
    return json.loads(match.group(1)), json.loads(match.group(2))


@pytest.mark.django_db
def test_the_upsell_thank_you_page_sends_what_the_server_lane_sends():
    order = make_order("B1")
    charge = upsell(1, "19.00", contents=UPSELL_LINES)
    html = render("{% tiktok_purchase order charge=charge %}", order=order, charge=charge)
    pay(order, charge=charge)
    properties, options = tracked(html)
    server = row("order_B1_upsell_1")
    assert options == {"event_id": "order_B1_upsell_1"}
    assert properties == server.payload["properties"]


@pytest.mark.django_db
def test_the_tag_refuses_a_bad_charge_with_a_comment():
    order = make_order("B2")
    html = render("{% tiktok_purchase order charge=charge %}", order=order, charge=upsell(1, "-1"))
    assert html == "<!-- TikTok purchase: not sent (invalid order data: charge.value) -->"
    html = render("{% tiktok_purchase order charge=charge %}", order=order, charge="upsell")
    assert html == "<!-- TikTok purchase: not sent (invalid order data: charge) -->"


@pytest.mark.django_db
def test_the_tag_leaves_renewals_to_the_server_lane():
    order = make_order("B3")
    html = render("{% tiktok_purchase order charge=charge %}", order=order, charge=renewal(2, "9"))
    assert html == "<!-- TikTok purchase: not sent (a renewal is sent by the server lane only) -->"
