"""Refunds: the order_refunded signal, recorded once against the purchase, never sent."""

import logging
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from tests.shop.models import Order
from tests.test_outbox import make_order, pay
from tiktok_tracking import delivery
from tiktok_tracking.events import event_id_for
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.models import Refund, TrackedEvent
from tiktok_tracking.refunds import net_value, refund_facts, refunded_amounts
from tiktok_tracking.signals import order_refunded


def refund(order, **kwargs):
    with transaction.atomic():
        return order_refunded.send(sender=Order, order=order, **kwargs)


def test_a_refund_without_an_amount_takes_back_the_whole_order():
    facts = refund_facts(Decimal("89.99"))
    assert (facts.amount, facts.full, facts.refund_key, facts.capped) == (
        Decimal("89.99"),
        True,
        "full",
        False,
    )


def test_a_partial_refund_is_told_apart_by_its_amount_or_the_shops_id():
    assert refund_facts(Decimal("89.99"), "10.50").refund_key == "partial:10.5"
    assert refund_facts(Decimal("89.99"), 10).refund_key == "partial:10"
    assert refund_facts(Decimal("89.99"), Decimal("10"), refund_id=" re_1 ").refund_key == "re_1"
    assert not refund_facts(Decimal("89.99"), "10.50").full
    # The whole amount given explicitly is a full refund, whatever its form.
    assert refund_facts(Decimal("100"), "100.00").refund_key == "full"


def test_a_refund_larger_than_the_order_counts_as_the_whole_order():
    facts = refund_facts(Decimal("20"), "25")
    assert (facts.amount, facts.full, facts.capped) == (Decimal("20"), True, True)


@pytest.mark.parametrize(
    ("amount", "refund_id"),
    [("-1", None), ("abc", None), (float("nan"), None), (True, None), ("5", "r" * 65)],
)
def test_bad_refund_input_is_a_clear_error(amount, refund_id):
    with pytest.raises(InvalidOrderData):
        refund_facts(Decimal("20"), amount, refund_id)


def test_net_value_never_goes_below_zero():
    assert net_value(Decimal("20"), Decimal("5")) == Decimal("15")
    assert net_value(Decimal("20"), Decimal("30")) == Decimal("0")


@pytest.mark.django_db
def test_order_refunded_records_the_refund_against_the_purchase_once(sandbox):
    order = make_order("501", total="89.99", country="CA", currency="EUR")
    pay(order)
    refund(order)
    refund(order)  # a webhook delivered twice

    [row] = Refund.objects.all()
    assert (row.order_id, row.event_id, row.refund_key) == (
        "501",
        event_id_for("Purchase", "501"),
        "full",
    )
    assert (row.amount, row.order_value, row.currency, row.full, row.country) == (
        Decimal("89.99"),
        Decimal("89.99"),
        "EUR",
        True,
        "CA",
    )
    # Nothing of it goes to TikTok, which has no refund event: only the purchase is sent.
    assert list(TrackedEvent.objects.values_list("event", flat=True)) == ["Purchase"]
    delivery.deliver_due_events()
    assert [event["event"] for event in sandbox.events()] == ["Purchase"]


@pytest.mark.django_db
def test_partial_refunds_add_up_and_each_is_kept_once():
    order = make_order("502", total="100.00")
    refund(order, amount=Decimal("10"), refund_id="re_1")
    refund(order, amount=Decimal("10"), refund_id="re_2")
    refund(order, amount=Decimal("10"), refund_id="re_2")
    refund(order, amount="5.5")
    refund(order, amount="5.50")
    assert refunded_amounts(["502", "nope"]) == {"502": Decimal("25.5")}


@pytest.mark.django_db
def test_a_bad_refund_is_logged_not_raised_into_the_shop(caplog):
    order = make_order("503", total="10.00")
    with caplog.at_level(logging.ERROR, logger="tiktok_tracking.refunds"):
        refund(order, amount="ten")
    assert not Refund.objects.exists()
    assert "amount" in caplog.text and "'ten' is not a number" in caplog.text
    # The shop's transaction goes on: the order is still there and can be refunded properly.
    refund(order, amount="4")
    assert Refund.objects.get().amount == Decimal("4")


@pytest.mark.django_db
def test_the_order_panel_shows_refunds_and_what_the_order_nets():
    order = make_order("504", total="80.00")
    pay(order)
    refund(order, amount="30", refund_id="re_9")
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    html = client.get(f"/admin/shop/order/{order.pk}/change/").content.decode()
    assert "Refunded (not sent to TikTok" in html
    assert "30 of 80 USD; net 50 USD" in html
    assert "re_9" in html
    # An order refunded with no event recorded still shows its refund.
    unpaid = make_order("505", total="12.00")
    refund(unpaid)
    html = client.get(f"/admin/shop/order/{unpaid.pk}/change/").content.decode()
    assert "No TikTok events recorded" in html and "12 of 12 USD; net 0 USD" in html


@pytest.mark.django_db
def test_the_order_panel_shows_each_events_estimated_match_quality():
    from tiktok_tracking.readiness.quality import mask_score
    from tiktok_tracking.rollups import key_mask

    order = make_order("506", total="10.00")
    pay(order)
    row = TrackedEvent.objects.get(order_id="506")
    assert mask_score(row.match_keys) > 0  # the test shop's orders carry an email
    TrackedEvent.objects.filter(pk=row.pk).update(match_keys=key_mask("email", "ttclid", "ip"))
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    html = client.get(f"/admin/shop/order/{order.pk}/change/").content.decode()
    assert "match quality (est., of 10)" in html
    assert "<td class='num'>5.5</td>" in html
