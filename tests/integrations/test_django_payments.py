"""The django-payments integration against the real package: its dummy provider, its signal."""

import hashlib
import logging
import subprocess
import sys
from decimal import Decimal

import pytest
from django.db import transaction
from django.test import Client
from payments import PaymentStatus, RedirectNeeded
from payments.signals import status_changed

from tests.conftest import ROOT, wait_until
from tests.payments_shop.models import OrderPayment, Payment, PaymentLine
from tests.shop.models import Order, OrderLine
from tests.test_template_tags import call_arguments
from tiktok_tracking.integrations import payments as integration
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.signals import payment_completed

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.payments_shop.urls")]

Status = TrackedEvent.Status
PAYMENT_ADAPTER = "tiktok_tracking.integrations.payments.PaymentAdapter"
EMAIL_SHA256 = hashlib.sha256(b"shopper@example.com").hexdigest()
PHONE_SHA256 = hashlib.sha256(b"+14155550100").hexdigest()
# The shopper's browser: the same at checkout, on the payment page and back from the provider.
BROWSER = {"HTTP_USER_AGENT": "Mozilla/5.0 (test)", "REMOTE_ADDR": "203.0.113.7"}
# What the dummy provider's form takes: the outcome to simulate, and how the gateway behaves.
DUMMY_CONFIRMED = {
    "status": "confirmed",
    "fraud_status": "accept",
    "gateway_response": "3ds-disabled",
}
CONTENTS = [
    {"content_id": "MUG-1", "content_name": "Mug", "quantity": 2, "price": 19.9},
    {"content_id": "TEE-2", "content_name": "T-shirt", "quantity": 1, "price": 20.0},
]


@pytest.fixture
def tiktok_settings(settings):
    """Change TIKTOK_TRACKING keys for one test: ``tiktok_settings(ORDER_ADAPTER=...)``."""

    def change(**values):
        settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, **values}

    return change


@pytest.fixture
def payment_is_order(tiktok_settings, settings):
    """A shop whose django-payments Payment is the order."""
    tiktok_settings(ORDER_ADAPTER=PAYMENT_ADAPTER)
    settings.PAYMENT_MODEL = "payments_shop.Payment"


@pytest.fixture
def status_signals():
    """The statuses django-payments' ``status_changed`` carried during the test, in order."""
    seen = []

    def record(sender, instance, **kwargs):
        seen.append(instance.status)

    status_changed.connect(record, weak=False, dispatch_uid="test-status-recorder")
    yield seen
    status_changed.disconnect(dispatch_uid="test-status-recorder")


LINES = (("MUG-1", "Mug", 2, "19.90", ""), ("TEE-2", "T-shirt", 1, "20.00", ""))


def make_payment(lines=LINES, **fields):
    values = {
        "variant": "default",
        "currency": "EUR",
        "total": Decimal("59.80"),
        "billing_email": " Shopper@Example.COM ",
        "billing_phone": "+1 415 555 0100",
        "billing_country_code": "US",
    }
    values.update(fields)
    payment = Payment.objects.create(**values)
    for sku, name, quantity, price, currency in lines:
        PaymentLine.objects.create(
            payment=payment,
            sku=sku,
            name=name,
            quantity=quantity,
            price=Decimal(price),
            currency=currency,
        )
    return payment


def submit_dummy_form(payment, **data):
    """Pay through the dummy provider's form; the URL django-payments redirects the shopper to."""
    with pytest.raises(RedirectNeeded) as redirect:
        payment.get_form(data={**DUMMY_CONFIRMED, **data})
    return str(redirect.value)


def make_order(number, total="89.99"):
    order = Order.objects.create(
        number=number, email="shopper@example.com", country="US", total=Decimal(total)
    )
    OrderLine.objects.create(order=order, sku="SKU-1", name="Mug", quantity=1, price=order.total)
    return order


def pay_order(order, status="confirmed"):
    payment = OrderPayment.objects.create(
        order=order, variant="default", currency="USD", total=order.total
    )
    submit_dummy_form(payment, status=status)
    return payment


def rendered_purchase(html):
    """``(event, properties, event_id)`` of the page's one ``{% tiktok_purchase %}``."""
    [[event, properties, options]] = call_arguments(html, "ttq.track")
    return event, properties, options["event_id"]


def shopper(**cookies):
    client = Client()
    client.cookies["country"] = "US"
    for name, value in cookies.items():
        client.cookies[name] = value
    return client


# The payment is the order ----------------------------------------------------------------------


def test_confirmed_payment_records_one_purchase(payment_is_order):
    payment = make_payment()

    success_url = submit_dummy_form(payment)

    assert success_url == f"/payment-shop/thanks/{payment.pk}/"
    row = TrackedEvent.objects.get()
    assert (row.event, row.event_id, row.order_id, row.status) == (
        "Purchase",
        f"order_{payment.pk}",
        str(payment.pk),
        Status.PENDING,
    )
    assert row.payload["event_id"] == row.event_id
    assert row.payload["properties"] == {
        "currency": "EUR",
        "value": 59.8,
        "content_type": "product",
        "contents": CONTENTS,
        "order_id": str(payment.pk),
    }
    assert row.payload["user"]["email"] == EMAIL_SHA256
    assert row.payload["user"]["phone"] == PHONE_SHA256
    assert row.country == "US"


# Every status the installed django-payments knows but confirmed (4.0 added "cancelled").
@pytest.mark.parametrize(
    "status",
    [status for status, _ in PaymentStatus.CHOICES if status != PaymentStatus.CONFIRMED],
)
def test_other_statuses_record_nothing(payment_is_order, status_signals, status):
    payment = make_payment()

    payment.change_status(status)

    assert status_signals == [status]
    assert not TrackedEvent.objects.exists()
    # The receiver is listening: the same payment confirmed is recorded.
    payment.change_status(PaymentStatus.CONFIRMED)
    assert TrackedEvent.objects.get().event_id == f"order_{payment.pk}"


def test_rejected_through_the_dummy_form_records_nothing(payment_is_order):
    payment = make_payment()

    failure_url = submit_dummy_form(payment, status="rejected")

    assert failure_url == f"/payment-shop/failed/{payment.pk}/"
    assert not TrackedEvent.objects.exists()


def test_preauthorised_then_captured_payment_records_one_purchase(payment_is_order, status_signals):
    payment = make_payment()
    submit_dummy_form(payment, status="preauth")
    assert not TrackedEvent.objects.exists()

    payment.capture(amount=payment.total)

    # The dummy provider confirms, and so does BasePayment.capture after it.
    assert status_signals[-2:] == [PaymentStatus.CONFIRMED, PaymentStatus.CONFIRMED]
    assert TrackedEvent.objects.get().event_id == f"order_{payment.pk}"


def test_confirmed_again_and_after_a_refund_records_one_purchase(payment_is_order, status_signals):
    payment = make_payment()
    submit_dummy_form(payment)
    first = TrackedEvent.objects.get()

    payment.change_status(PaymentStatus.CONFIRMED)  # a provider calling back twice
    payment.captured_amount = payment.total  # what a provider records when it captures
    payment.save()
    payment.refund(amount=payment.total)
    payment.change_status(PaymentStatus.CONFIRMED)  # the refund reversed

    assert status_signals[-4:] == ["confirmed", "confirmed", "refunded", "confirmed"]
    row = TrackedEvent.objects.get()
    assert (row.pk, row.payload) == (first.pk, first.payload)


def test_payment_from_an_opt_in_country_without_a_captured_context_is_suppressed(
    payment_is_order,
):
    # No checkout capture: the server lane knows no consent, only the billing country.
    payment = make_payment(billing_country_code="DE")

    submit_dummy_form(payment)

    row = TrackedEvent.objects.get()
    assert (row.status, row.country) == (Status.SUPPRESSED, "DE")
    assert row.suppressed_reason


def test_confirmation_rolled_back_records_nothing(payment_is_order):
    payment = make_payment()

    with pytest.raises(RuntimeError), transaction.atomic():
        payment.change_status(PaymentStatus.CONFIRMED)
        assert TrackedEvent.objects.count() == 1
        raise RuntimeError("the shop's payment transaction fails")

    assert not TrackedEvent.objects.exists()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.WAITING
    payment.change_status(PaymentStatus.CONFIRMED)
    assert TrackedEvent.objects.count() == 1


def test_payment_without_items_is_recorded_invalid_and_still_confirmed(payment_is_order):
    payment = make_payment(lines=())

    submit_dummy_form(payment)

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CONFIRMED
    row = TrackedEvent.objects.get()
    assert (row.event_id, row.status, row.payload) == (f"order_{payment.pk}", Status.FAILED, {})
    assert row.last_error.startswith("Invalid order data: contents: get_purchased_items()")


def test_payment_without_items_is_sent_when_the_adapter_allows_it(tiktok_settings, settings):
    # A shop selling without lines (a donation) says so on its adapter.
    tiktok_settings(ORDER_ADAPTER="tests.payments_shop.adapters.PaymentWithoutLinesAdapter")
    settings.PAYMENT_MODEL = "payments_shop.Payment"
    payment = make_payment(lines=())

    submit_dummy_form(payment)

    row = TrackedEvent.objects.get()
    assert row.status == Status.PENDING
    assert row.payload["properties"]["contents"] == []
    assert row.payload["properties"]["value"] == 59.8


@pytest.mark.parametrize(
    ("fields", "lines", "reason"),
    [
        ({"currency": "BTC"}, LINES, "currency: 'BTC' is not an active ISO 4217 currency code"),
        ({"total": Decimal("-1.00")}, LINES, "value: must not be negative, got -1.00"),
        ({}, (("", "Mug", 1, "19.90", ""),), "contents.0.content_id: must not be empty"),
        (
            {},
            (*LINES, ("CAP-3", "Cap", 1, "9.00", "USD")),
            "contents.2.currency: 'USD' differs from the payment's currency 'EUR'",
        ),
    ],
)
def test_payment_with_bad_data_is_recorded_invalid_with_the_reason(
    payment_is_order, fields, lines, reason
):
    payment = make_payment(lines=lines, **fields)

    submit_dummy_form(payment)

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CONFIRMED
    row = TrackedEvent.objects.get()
    assert (row.event_id, row.status) == (f"order_{payment.pk}", Status.FAILED)
    assert row.last_error == f"Invalid order data: {reason}"


def test_thank_you_page_renders_the_server_rows_event_id(payment_is_order):
    client = shopper()
    checkout = client.post(
        "/payment-shop/checkout/", {"email": "shopper@example.com"}, **BROWSER
    ).json()

    response = client.post(
        f"/payment-shop/pay/{checkout['payment']}/", DUMMY_CONFIRMED, follow=True, **BROWSER
    )

    assert response.redirect_chain == [(f"/payment-shop/thanks/{checkout['payment']}/", 302)]
    event, properties, event_id = rendered_purchase(response.content.decode())
    row = TrackedEvent.objects.get()
    assert (
        (event, event_id)
        == (row.event, row.event_id)
        == ("Purchase", f"order_{checkout['payment']}")
    )
    assert properties == row.payload["properties"]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_confirmed_payment_reaches_the_sandbox_through_a_real_worker(
    payment_is_order, sandbox, start_worker
):
    start_worker()
    client = shopper(_ttp="ttp-cookie-1")
    data = {"email": " Shopper@Example.COM ", "phone": "+1 415 555 0100"}
    pk = client.post("/payment-shop/checkout/?ttclid=click-123", data, **BROWSER).json()["payment"]
    token = Payment.objects.get(pk=pk).token

    # 3-D Secure: the provider sends the shopper back to django-payments' own callback view,
    # which confirms the payment in its transaction; the signal carries no request.
    response = client.post(
        f"/payment-shop/pay/{pk}/",
        {**DUMMY_CONFIRMED, "gateway_response": "3ds-redirect", "verification_result": "confirmed"},
        follow=True,
        **BROWSER,
    )

    assert [url for url, _status in response.redirect_chain] == [
        f"/payments/process/{token}/?verification_result=confirmed",
        f"/payment-shop/thanks/{pk}/",
    ]
    _event, _properties, page_event_id = rendered_purchase(response.content.decode())
    row = wait_until(
        lambda: TrackedEvent.objects.filter(status=Status.DELIVERED).first(),
        timeout=30,
        message="the purchase to be delivered",
    )
    [request] = [r for r in sandbox.requests if r["path"].endswith("/event/track/")]
    assert request["answer"]["code"] == 0
    [item] = request["body"]["data"]
    assert item["event"] == "Purchase"
    assert item["event_id"] == row.event_id == page_event_id == f"order_{pk}"
    assert item["properties"]["value"] == 59.8
    assert item["properties"]["currency"] == "EUR"
    assert item["properties"]["contents"] == CONTENTS
    assert item["user"]["email"] == EMAIL_SHA256
    assert item["user"]["phone"] == PHONE_SHA256
    # Captured at checkout: the provider's callback could not have supplied them.
    assert item["user"]["ttclid"] == "click-123"
    assert item["user"]["ttp"] == "ttp-cookie-1"
    assert item["user"]["ip"] == "203.0.113.7"
    assert row.attempts == 1


# The payment pays for an order of the shop's -------------------------------------------------


def test_payments_of_a_shop_order_record_the_orders_one_purchase(client):
    order = make_order("5001")

    pay_order(order, status="rejected")  # a declined card
    assert not TrackedEvent.objects.exists()
    pay_order(order)
    pay_order(order)  # paid twice by mistake: still one purchase

    row = TrackedEvent.objects.get()
    assert (row.event_id, row.order_id) == ("order_5001", "5001")
    assert row.payload["properties"]["value"] == 89.99
    assert row.payload["properties"]["currency"] == "USD"
    assert row.payload["user"]["email"] == EMAIL_SHA256
    client.cookies["country"] = "US"
    page = client.get("/payment-shop/orders/5001/thanks/")
    assert rendered_purchase(page.content.decode())[2] == row.event_id


def test_adapter_hook_finds_the_order_of_a_payment(tiktok_settings):
    tiktok_settings(ORDER_ADAPTER="tests.payments_shop.adapters.OrderNumberInPaymentAdapter")
    make_order("5002", total="42.00")
    payment = make_payment()
    payment.attrs.order_number = "5002"
    payment.save()

    payment.change_status(PaymentStatus.CONFIRMED)

    row = TrackedEvent.objects.get()
    assert row.event_id == "order_5002"
    assert row.payload["properties"]["value"] == 42.0


def test_payment_whose_order_cannot_be_found_is_logged_and_still_confirmed(settings, caplog):
    # The shop's adapter reads its Order, but this payment model has no link to one.
    settings.PAYMENT_MODEL = "payments_shop.Payment"
    payment = make_payment()

    with caplog.at_level(logging.ERROR, logger=integration.__name__):
        submit_dummy_form(payment)

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CONFIRMED
    assert not TrackedEvent.objects.exists()
    assert f"No TikTok purchase for payment {payment.pk}" in caplog.text
    assert "defines no order_for_payment(payment)" in caplog.text
    assert [error.id for error in integration.check_configuration()] == [
        "tiktok_tracking.payments.E001"
    ]


def test_a_failing_receiver_of_the_shop_does_not_fail_the_payment(payment_is_order, caplog):
    def broken_receiver(sender, **kwargs):
        raise RuntimeError("the shop's own receiver is broken")

    payment_completed.connect(broken_receiver, weak=False, dispatch_uid="test-broken")
    try:
        payment = make_payment()
        with caplog.at_level(logging.ERROR, logger=integration.__name__):
            submit_dummy_form(payment)
    finally:
        payment_completed.disconnect(dispatch_uid="test-broken")

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CONFIRMED
    assert TrackedEvent.objects.count() == 1
    assert "A payment_completed receiver" in caplog.text
    assert "the shop's own receiver is broken" in caplog.text


# Switching it on, and its configuration -------------------------------------------------------


def test_disconnected_integration_records_nothing(payment_is_order):
    assert integration.disconnect() is True
    try:
        make_payment().change_status(PaymentStatus.CONFIRMED)
        assert not TrackedEvent.objects.exists()
    finally:
        integration.connect()
    make_payment().change_status(PaymentStatus.CONFIRMED)
    assert TrackedEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("adapter", "payment_model"),
    [
        (None, "payments_shop.OrderPayment"),  # the shop's adapter; payment.order
        (PAYMENT_ADAPTER, "payments_shop.Payment"),
        (PAYMENT_ADAPTER, "payments_shop.OrderPayment"),
        ("tests.payments_shop.adapters.OrderNumberInPaymentAdapter", "payments_shop.Payment"),
    ],
)
def test_configurations_that_find_the_order_pass_the_check(
    tiktok_settings, settings, adapter, payment_model
):
    if adapter:
        tiktok_settings(ORDER_ADAPTER=adapter)
    settings.PAYMENT_MODEL = payment_model

    assert integration.check_configuration() == []


def test_check_reports_a_missing_core_app(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "tiktok_tracking"]

    errors = integration.check_configuration()

    assert [error.id for error in errors] == ["tiktok_tracking.payments.E002"]


def test_without_django_payments_the_import_names_the_extra():
    # An interpreter where "import payments" fails, as it does when the package is missing.
    code = (
        "import sys\n"
        "sys.modules['payments'] = None\n"
        "from django.core.exceptions import ImproperlyConfigured\n"
        "try:\n"
        "    import tiktok_tracking.integrations.payments\n"
        "except ImproperlyConfigured as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 3, result.stderr
    assert "needs django-payments" in result.stdout
    assert "pip install 'django-tiktok-tracking[payments]'" in result.stdout
