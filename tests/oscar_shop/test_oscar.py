"""The django-oscar integration on real oscar: its checkout, dashboard, order creator and events."""

import hashlib
import json
import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.apps import AppConfig
from django.apps.registry import Apps
from django.contrib.auth.models import Permission
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from oscar.apps.checkout.signals import post_checkout
from oscar.apps.order.signals import order_placed
from oscar.core.loading import get_class, get_model
from oscar.test import factories

from tests.conftest import wait_until
from tiktok_tracking.integrations import oscar as integration
from tiktok_tracking.models import CheckoutContext, TrackedEvent
from tiktok_tracking.signals import payment_completed

Order = get_model("order", "Order")
ShippingAddress = get_model("order", "ShippingAddress")
PaymentEventType = get_model("order", "PaymentEventType")
Basket = get_model("basket", "Basket")
Default = get_class("partner.strategy", "Default")

Status = TrackedEvent.Status

SHOPPER_IP = "203.0.113.7"
SHOPPER_AGENT = "Mozilla/5.0 (shopper)"
STAFF_IP = "198.51.100.9"
POSTCODES = {"US": "94105", "DE": "10115"}
OSCAR_PAGE = Path(__file__).resolve().parents[2] / "docs/integrations/oscar.md"


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


class Shopper:
    """A guest's browser: lands from a TikTok ad, then goes through oscar's own checkout views."""

    def __init__(self, country="US"):
        self.client = Client(
            HTTP_USER_AGENT=SHOPPER_AGENT, REMOTE_ADDR=SHOPPER_IP, HTTP_X_COUNTRY=country
        )
        self.client.cookies["_ttp"] = "ttp-cookie-1"
        self.client.get("/catalogue/?ttclid=click-123")

    def post(self, url, data):
        response = self.client.post(url, data)
        # Every checkout step redirects when its form is valid; a 200 is a form with errors.
        assert response.status_code == 302, response.content.decode()[:2000]
        return response

    def grant_consent(self):
        assert self.client.post("/tiktok/consent/", {"status": "granted"}).status_code == 200

    def buy(self, *items, email="Shopper@Example.COM", country="US", payment="card"):
        """Put ``(product, quantity)`` items in the basket and place the order; the Order."""
        for product, quantity in items:
            self.post(reverse("basket:add", kwargs={"pk": product.pk}), {"quantity": quantity})
        self.post(reverse("checkout:index"), {"username": email, "options": "anonymous"})
        self.post(
            reverse("checkout:shipping-address"),
            {
                "first_name": "Ann",
                "last_name": "Lee",
                "line1": "1 Main Street",
                "line4": "Springfield",
                "postcode": POSTCODES[country],
                "country": country,
                "phone_number": "+1 415 555 0100",
            },
        )
        # The one shipping method (oscar's free shipping) is chosen by visiting its step.
        assert self.client.get(reverse("checkout:shipping-method")).status_code == 302
        response = self.post(
            reverse("checkout:preview"), {"action": "place_order", "payment": payment}
        )
        assert response["Location"] == reverse("checkout:thank-you")
        return Order.objects.get(pk=self.client.session["checkout_order_id"])

    def thank_you_page(self):
        response = self.client.get(reverse("checkout:thank-you"))
        assert response.status_code == 200
        return response.content.decode()


class Staff:
    """A member of staff working in oscar's dashboard, from another machine."""

    def __init__(self, django_user_model):
        user = django_user_model.objects.create_user(
            username="staff", email="staff@example.com", password="x", is_staff=True
        )
        user.user_permissions.add(
            *Permission.objects.filter(
                content_type__app_label="order", codename__in=["view_order", "change_order"]
            )
        )
        self.client = Client(HTTP_USER_AGENT="Mozilla/5.0 (staff)", REMOTE_ADDR=STAFF_IP)
        self.client.force_login(user)

    def order_action(self, order, **data):
        url = reverse("dashboard:order-detail", kwargs={"number": order.number})
        response = self.client.post(url, data)
        assert response.status_code == 302, response.content.decode()[:2000]

    def change_status(self, order, status):
        self.order_action(order, order_action="change_order_status", new_status=status)
        order.refresh_from_db()
        assert order.status == status

    def record_payment(self, order, event_type, amount):
        self.order_action(
            order,
            order_action="create_order_payment_event",
            payment_event_type=event_type.code,
            amount=str(amount),
        )


_decoder = json.JSONDecoder()


def purchase_calls(html):
    """The ``[event, properties, options]`` of every ``ttq.track("Purchase", ...)`` on a page."""
    calls = []
    for match in re.finditer(r"window\.ttq\.track\(", html):
        position, arguments = match.end(), []
        for _ in range(3):
            value, position = _decoder.raw_decode(html, position)
            arguments.append(value)
            position = re.compile(r"[\s,]*").match(html, position).end()
        if arguments[0] == "Purchase":
            calls.append(arguments)
    return calls


@pytest.fixture
def signal_log():
    """What oscar's checkout signals and payment_completed carried, in the order they fired."""
    log = []

    def on_placed(sender, order, **kwargs):
        log.append(("order_placed", str(order.number), None))

    def on_checkout(sender, order, request, **kwargs):
        log.append(("post_checkout", str(order.number), request))

    def on_payment(sender, order, request=None, **kwargs):
        log.append(("payment_completed", str(order.number), request))

    connections = [
        (order_placed, on_placed),
        (post_checkout, on_checkout),
        (payment_completed, on_payment),
    ]
    for signal, receiver in connections:
        signal.connect(receiver, weak=False)
    yield log
    for signal, receiver in connections:
        signal.disconnect(receiver)


def fired(log, name):
    return [(number, request) for signal, number, request in log if signal == name]


@pytest.fixture
def shop(countries, make_product):
    """Two products: a mug with a UPC, a poster without one."""
    return {
        "mug": make_product("Mug", "12.50", upc="MUG-0001"),
        "poster": make_product("Poster", "7.25"),
    }


def rows_of(order):
    return list(TrackedEvent.objects.filter(order_id=order.number))


# Placed through oscar's checkout: the payment was taken first ------------------------------------


def test_checkout_sends_one_purchase_with_the_shoppers_context(db, shop, signal_log):
    order = Shopper().buy((shop["mug"], 2), (shop["poster"], 1))

    # Oscar fired both signals for this order; the shop's receivers heard of the payment once,
    # with the shopper's request.
    assert fired(signal_log, "order_placed") == [(order.number, None)]
    assert [number for number, _ in fired(signal_log, "post_checkout")] == [order.number]
    [(number, request)] = fired(signal_log, "payment_completed")
    assert number == order.number
    assert request is not None and request.META["REMOTE_ADDR"] == SHOPPER_IP

    [row] = rows_of(order)
    assert row.status == Status.PENDING
    assert row.event == "Purchase"
    assert row.event_id == f"order_{order.number}"
    assert row.country == "US"
    payload = row.payload
    assert payload["properties"] == {
        "currency": "USD",
        "value": 32.25,
        "content_type": "product",
        "contents": [
            {"content_id": "MUG-0001", "content_name": "Mug", "quantity": 2, "price": 12.5},
            {
                "content_id": str(shop["poster"].pk),
                "content_name": "Poster",
                "quantity": 1,
                "price": 7.25,
            },
        ],
        "order_id": order.number,
    }
    assert Decimal(str(payload["properties"]["value"])) == order.total_incl_tax
    user = payload["user"]
    assert user["email"] == sha256("shopper@example.com")
    assert user["phone"] == sha256("+14155550100")
    assert "external_id" not in user  # a guest has no account
    assert user["ttclid"] == "click-123"
    assert user["ttp"] == "ttp-cookie-1"
    assert user["ip"] == SHOPPER_IP
    assert user["user_agent"] == SHOPPER_AGENT


def test_signals_sent_again_for_the_same_order_record_nothing_more(db, shop, signal_log):
    shopper = Shopper()
    order = shopper.buy((shop["mug"], 1))

    # A retried task or a custom view announcing the same order again.
    order_placed.send(sender=None, order=order, user=None)
    post_checkout.send(sender=None, order=order, user=None, request=None, response=None)
    payment_completed.send(sender=Order, order=order, request=None)

    assert len(rows_of(order)) == 1
    # Only the shop's own resend reached payment_completed a second time.
    assert len(fired(signal_log, "payment_completed")) == 2


def test_thank_you_page_sends_the_browser_purchase_with_the_same_event_id(db, shop):
    shopper = Shopper()
    order = shopper.buy((shop["mug"], 2), (shop["poster"], 1))
    [row] = rows_of(order)

    [(_event, properties, options)] = purchase_calls(shopper.thank_you_page())

    assert options == {"event_id": row.event_id}
    assert properties == row.payload["properties"]
    # Oscar marks the order tracked on the first view; a reload sends no second purchase.
    assert purchase_calls(shopper.thank_you_page()) == []


def test_order_placed_outside_the_checkout_is_sent_without_a_request(
    db, shop, countries, django_user_model, signal_log
):
    customer = django_user_model.objects.create_user(
        username="kim", email="Kim@Example.com", password="x"
    )
    basket = Basket.objects.create(owner=customer)
    basket.strategy = Default()
    basket.add_product(shop["poster"], 3)
    address = ShippingAddress.objects.create(
        first_name="Kim",
        last_name="Park",
        line1="5 Side Street",
        line4="Portland",
        postcode="97201",
        country=countries["US"],
        phone_number="+1 503 555 0199",
    )

    # Oscar's OrderCreator, as an import script, an API or a marketplace sync would use it.
    order = factories.create_order(
        number="IMPORT-7", basket=basket, user=customer, shipping_address=address
    )

    assert fired(signal_log, "payment_completed") == [("IMPORT-7", None)]
    [row] = rows_of(order)
    assert row.event_id == "order_IMPORT-7"
    assert row.status == Status.PENDING
    user = row.payload["user"]
    assert user["email"] == sha256("kim@example.com")
    assert user["phone"] == sha256("+15035550199")
    assert user["external_id"] == sha256(str(customer.pk))
    assert not {"ip", "user_agent", "ttclid", "ttp"} & set(user)
    assert row.payload["properties"]["value"] == pytest.approx(21.75)


def test_lines_of_deleted_products_fall_back_to_the_partner_sku(db, shop):
    basket = Basket.objects.create()
    basket.strategy = Default()
    basket.add_product(shop["poster"], 1)
    order = factories.create_order(number="OLD-1", basket=basket)
    [line] = order.lines.all()
    shop["poster"].delete()

    contents = integration.OscarOrderAdapter(Order.objects.get(pk=order.pk)).contents()

    assert contents[0]["content_id"] == line.partner_sku
    assert contents[0]["price"] == Decimal("7.25")


# Bad data and broken configuration never break the checkout ---------------------------------------


def test_invalid_currency_is_recorded_as_failed_and_the_order_still_placed(
    db, countries, make_product
):
    # "RMB" is what many shops call the yuan; TikTok only knows "CNY".
    tea = make_product("Tea", "30.00", currency="RMB")
    shopper = Shopper()

    order = shopper.buy((tea, 1))

    assert order.currency == "RMB"
    [row] = rows_of(order)
    assert row.status == Status.FAILED
    assert row.payload == {}
    assert "currency" in row.last_error and "RMB" in row.last_error
    page = shopper.thank_you_page()
    assert purchase_calls(page) == []
    assert "invalid order data: currency" in page


def test_a_broken_adapter_setting_is_logged_and_the_checkout_goes_on(db, shop, settings, caplog):
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "ORDER_ADAPTER": "shop.gone.Adapter"}

    with caplog.at_level(logging.ERROR, logger="tiktok_tracking"):
        order = Shopper().buy((shop["mug"], 1))

    assert Order.objects.filter(number=order.number).exists()
    assert not TrackedEvent.objects.exists()
    assert "Could not track the TikTok purchase of an oscar order" in caplog.text


def oscar_warnings():
    return [m.id for m in checks.run_checks() if m.id.startswith("tiktok_tracking.oscar")]


def test_system_check_warns_about_an_adapter_that_cannot_read_oscar_orders(settings):
    assert oscar_warnings() == []
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "ORDER_ADAPTER": "tiktok_tracking.adapters.OrderAdapter",
    }
    assert oscar_warnings() == ["tiktok_tracking.oscar.W001"]


def test_system_check_warns_about_a_paid_status_oscar_does_not_have(deferred_payment):
    deferred_payment(paid_statuses=["Paid"])
    assert oscar_warnings() == []
    deferred_payment(paid_statuses=["paid"])
    assert oscar_warnings() == ["tiktok_tracking.oscar.W002"]


def test_system_check_warns_about_paid_statuses_under_oscar_s_empty_default_pipeline(
    deferred_payment, settings
):
    # Oscar's default: no pipeline, so set_status() refuses every change and no order is paid.
    settings.OSCAR_ORDER_STATUS_PIPELINE = {}
    deferred_payment(paid_statuses=["Paid"])
    [warning] = [m for m in checks.run_checks() if m.id == "tiktok_tracking.oscar.W002"]
    assert "OSCAR_ORDER_STATUS_PIPELINE is empty" in warning.msg
    assert "OSCAR_ORDER_STATUS_PIPELINE" in warning.hint
    # An order placed already paid needs no pipeline: it is sent when it is placed.
    settings.OSCAR_INITIAL_ORDER_STATUS = "Paid"
    assert oscar_warnings() == []
    # Paid when placed (the default rule) names no status, so there is nothing to warn about.
    settings.OSCAR_INITIAL_ORDER_STATUS = "Pending"
    deferred_payment()
    assert oscar_warnings() == []


def test_the_module_path_alone_stops_django_as_the_docs_say():
    # Only the app registry's first phase runs: it fails on the labels before any ready().
    with pytest.raises(ImproperlyConfigured) as info:
        Apps(installed_apps=["oscar.config.Shop", "tiktok_tracking.integrations.oscar"])
    assert str(info.value) == "Application labels aren't unique, duplicates: oscar"
    assert f"ImproperlyConfigured: {info.value}" in OSCAR_PAGE.read_text(encoding="utf-8")
    documented = AppConfig.create("tiktok_tracking.integrations.oscar.TikTokOscarConfig")
    assert isinstance(documented, integration.TikTokOscarConfig)
    assert documented.label == "tiktok_tracking_oscar"


@pytest.mark.parametrize("statuses", ["Paid", None, ["Paid", ""], [1]])
def test_connect_rejects_statuses_that_are_not_a_list_of_names(deferred_payment, statuses):
    with pytest.raises(TypeError, match="paid_statuses must be a list of"):
        deferred_payment(paid_statuses=statuses)


def test_a_failing_receiver_of_the_shop_neither_breaks_the_checkout_nor_undoes_the_row(
    db, shop, caplog
):
    def broken_receiver(sender, **kwargs):
        raise RuntimeError("the shop's own bug")

    payment_completed.connect(broken_receiver, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="tiktok_tracking"):
            order = Shopper().buy((shop["mug"], 1))
    finally:
        payment_completed.disconnect(broken_receiver)

    [row] = rows_of(order)
    assert row.status == Status.PENDING
    assert "A payment_completed receiver" in caplog.text and "broken_receiver" in caplog.text


# Consent: the shipping address's country decides ---------------------------------------------


def test_opt_in_country_sends_only_with_the_consent_given_at_checkout(db, shop):
    without = Shopper(country="DE").buy((shop["mug"], 1), country="DE")
    consenting = Shopper(country="DE")
    consenting.grant_consent()
    with_consent = consenting.buy((shop["mug"], 1), country="DE")

    [suppressed] = rows_of(without)
    assert suppressed.status == Status.SUPPRESSED
    assert suppressed.country == "DE"
    assert suppressed.suppressed_reason
    [pending] = rows_of(with_consent)
    assert pending.status == Status.PENDING
    assert pending.consent_status == "granted"


# Payment taken after the order is placed (opt-in rules) ------------------------------------------


def test_status_rule_sends_when_staff_mark_the_order_paid(
    db, shop, deferred_payment, django_user_model, signal_log
):
    deferred_payment(paid_statuses=["Paid", "Shipped"])
    shopper = Shopper()
    order = shopper.buy((shop["mug"], 1), payment="transfer")

    # Placed but unpaid: nothing sent, the shopper's browser kept for later.
    assert rows_of(order) == []
    assert fired(signal_log, "payment_completed") == []
    assert CheckoutContext.objects.get(order_id=order.number).ttclid == "click-123"

    staff = Staff(django_user_model)
    staff.change_status(order, "Paid")

    [row] = rows_of(order)
    assert row.status == Status.PENDING
    assert fired(signal_log, "payment_completed") == [(order.number, None)]
    user = row.payload["user"]
    # The checkout's browser, not the dashboard's.
    assert user["ip"] == SHOPPER_IP
    assert user["user_agent"] == SHOPPER_AGENT
    assert user["ttclid"] == "click-123"
    assert row.payload["properties"]["value"] == pytest.approx(12.5)

    staff.change_status(order, "Shipped")
    assert len(rows_of(order)) == 1
    assert len(fired(signal_log, "payment_completed")) == 1


def test_status_rule_sends_an_order_placed_already_paid_at_once(db, shop, deferred_payment):
    deferred_payment(paid_statuses=["Paid"])
    basket = Basket.objects.create()
    basket.strategy = Default()
    basket.add_product(shop["mug"], 1)

    order = factories.create_order(number="POS-1", basket=basket, status="Paid")

    [row] = rows_of(order)
    assert row.event_id == "order_POS-1"
    assert row.payload["properties"]["value"] == pytest.approx(12.5)


def test_nothing_is_sent_while_tracking_is_disabled(db, shop, settings, signal_log):
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "ENABLED": False}

    order = Shopper().buy((shop["mug"], 1))

    assert rows_of(order) == []
    assert fired(signal_log, "payment_completed") == []


def test_status_rule_sends_nothing_for_a_cancelled_order(
    db, shop, deferred_payment, django_user_model
):
    deferred_payment(paid_statuses=["Paid"])
    order = Shopper().buy((shop["mug"], 1), payment="transfer")

    Staff(django_user_model).change_status(order, "Cancelled")

    assert rows_of(order) == []


def test_payment_event_rule_sends_when_the_checkout_takes_the_payment(
    db, shop, deferred_payment, signal_log
):
    deferred_payment(paid_payment_event_types=["Settled"])

    order = Shopper().buy((shop["mug"], 1), payment="card")

    assert order.payment_events.get().event_type.name == "Settled"
    [(number, request)] = fired(signal_log, "payment_completed")
    assert number == order.number and request.META["REMOTE_ADDR"] == SHOPPER_IP
    [row] = rows_of(order)
    assert row.payload["user"]["ip"] == SHOPPER_IP


def test_payment_event_rule_waits_until_the_payments_cover_the_total(
    db, shop, deferred_payment, django_user_model, signal_log
):
    deferred_payment(paid_payment_event_types=["Settled"])
    order = Shopper().buy((shop["mug"], 2), payment="transfer")
    assert order.total_incl_tax == Decimal("25.00")
    staff = Staff(django_user_model)
    settled, _created = PaymentEventType.objects.get_or_create(name="Settled")
    refunded, _created = PaymentEventType.objects.get_or_create(name="Refunded")

    staff.record_payment(order, refunded, "25.00")  # another type does not count
    staff.record_payment(order, settled, "10.00")  # a first instalment
    assert order.payment_events.count() == 2
    assert rows_of(order) == []

    staff.record_payment(order, settled, "15.00")
    [row] = rows_of(order)
    assert row.payload["user"]["ip"] == SHOPPER_IP
    assert row.payload["properties"]["value"] == pytest.approx(25.0)

    staff.record_payment(order, settled, "15.00")  # the bank's notice, twice
    assert len(rows_of(order)) == 1
    assert fired(signal_log, "payment_completed") == [(order.number, None)]


def test_is_paid_rules():
    rule = integration.PaymentRule
    placed = rule()
    by_status = rule(paid_statuses=frozenset({"Paid"}))
    by_events = rule(paid_payment_event_types=frozenset({"Settled"}))
    total = Decimal("25.00")

    assert integration.is_paid(placed, status="Pending", settled_amount=None, total=total)
    assert integration.is_paid(by_status, status="Paid", settled_amount=None, total=total)
    assert not integration.is_paid(by_status, status="Pending", settled_amount=None, total=total)
    assert not integration.is_paid(
        by_events, status="Paid", settled_amount=Decimal("24.99"), total=total
    )
    assert integration.is_paid(by_events, status="", settled_amount=Decimal("25.00"), total=total)


# Delivered: a real worker, the sandbox over HTTP, both lanes with one id -------------------------


@pytest.mark.integration
def test_checkout_purchase_is_delivered_once_and_matches_the_browser(shop, sandbox, start_worker):
    start_worker()
    shopper = Shopper()
    order = shopper.buy((shop["mug"], 2))
    [(_event, _properties, options)] = purchase_calls(shopper.thank_you_page())

    row = wait_until(
        lambda: TrackedEvent.objects.filter(order_id=order.number, status=Status.DELIVERED).first(),
        timeout=30,
        message=f"order {order.number} to be delivered",
    )
    requests = [r for r in sandbox.requests if r["path"].endswith("/event/track/")]
    assert len(requests) == 1
    assert requests[0]["answer"]["code"] == 0
    [item] = requests[0]["body"]["data"]
    assert item["event"] == "Purchase"
    assert item["event_id"] == row.event_id == options["event_id"]
    assert item["properties"]["value"] == pytest.approx(25.0)
    assert item["properties"]["currency"] == "USD"
    assert item["user"]["email"] == sha256("shopper@example.com")
    assert item["user"]["ttclid"] == "click-123"
    assert row.attempts == 1
