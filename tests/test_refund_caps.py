"""Refunds are capped per order, never per refund, and count only for orders known as paid."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from tests.conftest import migrate, skip_unless_required
from tests.factories import delivered_purchase_rows
from tests.shop.models import Order
from tests.test_outbox import make_order, pay, tracking
from tiktok_tracking import refunds
from tiktok_tracking.models import Refund
from tiktok_tracking.readiness import figures as readiness_figures
from tiktok_tracking.refunds import refund_facts, refunded_amounts
from tiktok_tracking.signals import order_refunded


def refund(order, **kwargs):
    with transaction.atomic():
        order_refunded.send(sender=Order, order=order, **kwargs)


def refunded_orders_counted():
    """The refunds the readiness figures count, as orders, over every country and day."""
    first_day = timezone.localdate() - timedelta(days=30)
    return sum(readiness_figures.refunded_orders(first_day).values())


@pytest.fixture(autouse=True)
def recorded_purchases_only():
    with tracking(PAID_ORDERS=None):
        yield


def test_a_refund_takes_only_what_earlier_refunds_left_of_the_order():
    facts = refund_facts(Decimal("100"), "60", "re_3", already_refunded=Decimal("60"))
    assert (facts.requested, facts.amount, facts.capped, facts.full) == (
        Decimal("60"),
        Decimal("40"),
        True,
        False,
    )
    # The key is the shop's refund, not what was left of the order: a retry finds it again.
    assert refund_facts(Decimal("100"), "60", already_refunded=Decimal("70")).refund_key == (
        "partial:60"
    )
    nothing_left = refund_facts(Decimal("100"), None, already_refunded=Decimal("100"))
    assert (nothing_left.requested, nothing_left.amount, nothing_left.full) == (
        Decimal("100"),
        Decimal("0"),
        True,
    )


@pytest.mark.django_db
def test_three_partial_refunds_never_take_back_more_than_the_order():
    order = make_order("cap1", total="100.00")
    pay(order)
    for refund_id in ("re_1", "re_2", "re_3"):
        refund(order, amount=Decimal("60"), refund_id=refund_id)

    assert refunded_amounts(["cap1"]) == {"cap1": Decimal("100")}
    # Counted as one refunded order, not 1.8.
    assert refunded_orders_counted() == pytest.approx(1.0)
    rows = Refund.objects.filter(order_id="cap1").order_by("sequence")
    assert [(row.requested, row.amount) for row in rows] == [
        (Decimal("60"), Decimal("60")),
        (Decimal("60"), Decimal("40")),
        (Decimal("60"), Decimal("0")),
    ]
    assert [row.sequence for row in rows] == [1, 2, 3]


@pytest.mark.django_db
def test_a_full_refund_after_a_partial_one_takes_only_what_is_left():
    order = make_order("cap2", total="80.00")
    pay(order)
    refund(order, amount="30", refund_id="re_1")
    refund(order)  # the rest of the order, signalled as "the whole order"
    refund(order)  # the same webhook again: recorded once

    assert refunded_amounts(["cap2"]) == {"cap2": Decimal("80")}
    assert refunded_orders_counted() == pytest.approx(1.0)
    full = Refund.objects.get(order_id="cap2", refund_key="full")
    assert (full.requested, full.amount, full.full) == (Decimal("80"), Decimal("50"), True)


@pytest.mark.django_db
def test_an_order_value_lowered_by_a_refund_does_not_shrink_what_is_left():
    """Some shops lower the order's total as they refund: the order's value stays what it was
    at its first refund, so a second refund of the rest is counted whole."""
    order = make_order("cap3", total="100.00")
    pay(order)
    refund(order, amount="60", refund_id="re_1")
    Order.objects.filter(pk=order.pk).update(total=Decimal("40.00"))
    order.refresh_from_db()
    refund(order, amount="40", refund_id="re_2")

    assert refunded_amounts(["cap3"]) == {"cap3": Decimal("100")}
    assert refunded_orders_counted() == pytest.approx(1.0)
    assert set(Refund.objects.values_list("order_value", flat=True)) == {Decimal("100")}


@pytest.mark.django_db
def test_a_refund_of_an_unpaid_order_is_not_counted():
    paid = make_order("cap4", total="50.00")
    pay(paid)
    never_paid = make_order("cap5", total="50.00")
    refund(paid)
    refund(never_paid)

    assert refunded_orders_counted() == pytest.approx(1.0)
    # Recorded, so the admin shows it, but marked: the shop was never paid for that order.
    assert Refund.objects.get(order_id="cap5").order_paid is False
    assert Refund.objects.get(order_id="cap4").order_paid is True


@pytest.mark.django_db
def test_a_refund_of_an_order_the_app_never_recorded_is_not_counted():
    """An order paid before the app was installed, or in another shop: no purchase recorded,
    nothing TikTok counted, so its refund takes nothing back from the figures."""
    delivered_purchase_rows(["tracked"])
    refund(make_order("tracked", total="20.00"), amount="5")
    refund(make_order("before-install", total="20.00"))

    assert refunded_orders_counted() == pytest.approx(0.25)


@pytest.mark.django_db
def test_a_refund_counts_once_the_purchase_it_came_before_is_recorded():
    """A refund signalled before the order's purchase reached the outbox (recorded later, by
    the scan of paid orders) counts from then on."""
    order = make_order("cap6", total="40.00")
    refund(order, amount="10")
    assert refunded_orders_counted() == 0
    pay(order)
    assert Refund.objects.get(order_id="cap6").order_paid is False
    assert refunded_orders_counted() == pytest.approx(0.25)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_refunds_recorded_at_once_never_take_back_more_than_the_order(monkeypatch):
    """Two refunds of one order in two transactions at once: the second waits for the first,
    then takes what it left, so together they never take back more than the order."""
    if connection.vendor != "postgresql":
        skip_unless_required(
            "needs PostgreSQL (DATABASE_URL=postgres://...): two transactions at once on one "
            "order, which SQLite runs one after the other"
        )
    order = make_order("race1", total="100.00")
    pay(order)
    # Each read of the order's refunds, by thread: the second must read twice.
    reads = []
    record_once = getattr(refunds, "_record_once", None)

    def counted_record_once(*args, **kwargs):
        reads.append(threading.current_thread().name)
        return record_once(*args, **kwargs)

    monkeypatch.setattr(refunds, "_record_once", counted_record_once, raising=False)
    first_recorded = threading.Event()
    second_started = threading.Event()
    errors = []

    def first():
        try:
            with transaction.atomic():
                order_refunded.send(sender=Order, order=order, amount="60", refund_id="re_a")
                first_recorded.set()
                # Commit only once the second is on its way: it read the order before this
                # refund was committed.
                second_started.wait(timeout=10)
                threading.Event().wait(0.5)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            first_recorded.set()
            close_old_connections()
            connection.close()

    def second():
        try:
            first_recorded.wait(timeout=10)
            with transaction.atomic():
                second_started.set()
                order_refunded.send(sender=Order, order=order, amount="60", refund_id="re_b")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            second_started.set()
            connection.close()

    threads = [
        threading.Thread(target=first, name="first"),
        threading.Thread(target=second, name="second"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert Refund.objects.filter(order_id="race1").count() == 2
    assert refunded_amounts(["race1"]) == {"race1": Decimal("100")}
    assert refunded_orders_counted() == pytest.approx(1.0)
    second_row = Refund.objects.get(order_id="race1", refund_key="re_b")
    assert (second_row.amount, second_row.sequence) == (Decimal("40"), 2)
    # The second read the order before the first committed, met its number, and read again.
    assert sorted(reads) == ["first", "second", "second"]


@pytest.mark.django_db
def test_the_order_panel_shows_what_a_capped_refund_asked_and_what_is_not_counted():
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    order = make_order("cap7", total="100.00")
    pay(order)
    refund(order, amount="60", refund_id="re_1")
    refund(order, amount="60", refund_id="re_2")
    html = client.get(f"/admin/shop/order/{order.pk}/change/").content.decode()
    assert "100 of 100 USD; net 0 USD" in html
    assert "re_2; asked 60, only 40 was left of the order" in html
    assert "not counted" not in html

    unpaid = make_order("cap8", total="12.00")
    refund(unpaid)
    html = client.get(f"/admin/shop/order/{unpaid.pk}/change/").content.decode()
    assert "full; not counted: no purchase was recorded for this order" in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("latest_schema_after")
def test_the_migration_caps_the_refunds_recorded_before_per_order():
    """Refunds recorded by the release before, each capped only against the order: numbered,
    what they asked kept, what they take capped in order, the orders' paid state found."""
    old_apps = migrate([("tiktok_tracking", "0012_alert_not_configured")])
    OldRefund = old_apps.get_model("tiktok_tracking", "Refund")
    delivered_purchase_rows(["old1"])
    for key in ("re_1", "re_2", "re_3"):
        OldRefund.objects.create(
            order_id="old1",
            event_id="Purchase_old1",
            refund_key=key,
            amount=Decimal("60"),
            currency="USD",
            order_value=Decimal("100"),
        )
    OldRefund.objects.create(
        order_id="old2",
        event_id="Purchase_old2",
        refund_key="full",
        amount=Decimal("20"),
        currency="USD",
        full=True,
        order_value=Decimal("20"),
    )

    migrate([("tiktok_tracking", "0013_refunds_capped_per_order")])
    rows = Refund.objects.filter(order_id="old1").order_by("pk")
    assert [(r.sequence, r.requested, r.amount, r.order_paid) for r in rows] == [
        (1, Decimal("60"), Decimal("60"), True),
        (2, Decimal("60"), Decimal("40"), True),
        (3, Decimal("60"), Decimal("0"), True),
    ]
    never_paid = Refund.objects.get(order_id="old2")
    assert (never_paid.sequence, never_paid.amount, never_paid.order_paid) == (
        1,
        Decimal("20"),
        False,
    )
    assert refunded_orders_counted() == pytest.approx(1.0)
    # A new refund of a migrated order is numbered after them and finds nothing left.
    refund(make_order("old1", total="100.00"), amount="5", refund_id="re_4")
    assert Refund.objects.get(refund_key="re_4").sequence == 4
    assert refunded_amounts(["old1"]) == {"old1": Decimal("100")}

    # Back to the release before: its one amount is what each refund asked for.
    migrate([("tiktok_tracking", "0012_alert_not_configured")])
    assert sorted(OldRefund.objects.filter(order_id="old1").values_list("amount", flat=True)) == [
        Decimal("5"),
        Decimal("60"),
        Decimal("60"),
        Decimal("60"),
    ]
