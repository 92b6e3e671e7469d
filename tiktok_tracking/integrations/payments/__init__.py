"""django-payments integration: a confirmed payment sends payment_completed, read by an adapter.

Add ``"tiktok_tracking.integrations.payments"`` to ``INSTALLED_APPS`` (or call :func:`connect`
from your own ``AppConfig.ready()``). From then on every ``status_changed`` signal that leaves a
payment CONFIRMED sends :data:`tiktok_tracking.signals.payment_completed` for the payment's order,
which records one Purchase per order however often the payment is confirmed again.

Which object is "the order" (the thing both lanes derive the event_id from) depends on the shop:

- the payment itself: set ``ORDER_ADAPTER`` to :class:`PaymentAdapter` and render
  ``{% tiktok_purchase payment %}`` on the success page;
- a model of the shop's own that the payment points at: keep the shop's ``ORDER_ADAPTER``; the
  order is ``payment.order``, or whatever the adapter's ``order_for_payment(payment)`` returns.
"""

import logging
from decimal import Decimal

# Renamed: this package's own apps.py module would shadow the name once Django imports it.
from django.apps import apps as app_registry
from django.conf import settings
from django.core import checks

from tiktok_tracking import conf
from tiktok_tracking.adapters import (
    OrderAdapter,
    clean_contents,
    clean_country,
    clean_currency,
    clean_order_id,
    clean_value,
    configured_adapter_class,
)
from tiktok_tracking.exceptions import (
    InvalidOrderData,
    TikTokTrackingError,
    TikTokTrackingImproperlyConfigured,
)
from tiktok_tracking.signals import payment_completed

try:
    from payments import PaymentStatus
    from payments.signals import status_changed
except ImportError as exc:
    raise TikTokTrackingImproperlyConfigured(
        "tiktok_tracking.integrations.payments needs django-payments, which could not be "
        f"imported ({exc}). Install it with: pip install 'django-tiktok-tracking[payments]'"
    ) from exc

logger = logging.getLogger(__name__)

DISPATCH_UID = "tiktok_tracking.integrations.payments.on_status_changed"
# The conventional name of the payment's link to the shop's order (a ForeignKey, usually).
ORDER_ATTRIBUTE = "order"


class PaymentAdapter(OrderAdapter):
    """Reads a django-payments payment (a ``BasePayment`` subclass) as the order.

    For shops whose Payment is the order: the event_id is ``order_<payment pk>``, the value the
    payment's ``total``, the contents its ``get_purchased_items()``, and the match keys its
    billing email and phone. Subclass it to change any of them.
    """

    #: A payment whose ``get_purchased_items()`` yields nothing is recorded as failed, with the
    #: reason: django-payments requires the method, and an empty list is almost always a payment
    #: model that does not implement it. A shop that sells without lines sets this to False.
    require_items = True

    @classmethod
    def order_for_payment(cls, payment):
        """The order a confirmed ``payment`` pays for: here, the payment itself."""
        return payment

    def order_id(self) -> str:
        # The primary key rather than the token: stable, short, and what the shop's admin, its
        # success URL and the tiktok_reconcile report show.
        if self.order.pk is None:
            raise InvalidOrderData("order_id", "the payment has not been saved yet")
        return clean_order_id(self.order.pk)

    def value(self) -> Decimal:
        return clean_value(self.order.total)

    def currency(self) -> str:
        return clean_currency(self.order.currency)

    def contents(self) -> list[dict]:
        items = list(self.order.get_purchased_items() or ())
        if not items and self.require_items:
            raise InvalidOrderData(
                "contents",
                "get_purchased_items() returned no items; implement it on the payment model "
                "(or set require_items = False on a PaymentAdapter subclass)",
            )
        currency = self.currency()
        return clean_contents(
            [
                self.item_content(item, f"contents.{index}", currency)
                for index, item in enumerate(items)
            ]
        )

    def item_content(self, item, field, currency) -> dict:
        """One ``payments.PurchasedItem`` as an unvalidated content dict; ``field`` names it."""
        try:
            sku, name, quantity, price = item.sku, item.name, item.quantity, item.price
        except AttributeError:
            raise InvalidOrderData(
                field, f"must be a payments.PurchasedItem, not {type(item).__name__}"
            ) from None
        item_currency = getattr(item, "currency", None)
        # A line priced in another currency would be summed as if it were the payment's.
        if item_currency and str(item_currency).strip().upper() != currency:
            raise InvalidOrderData(
                f"{field}.currency",
                f"{item_currency!r} differs from the payment's currency {currency!r}",
            )
        # PurchasedItem.price is the unit price (the providers send it with the quantity).
        return {"content_id": sku, "content_name": name, "quantity": quantity, "price": price}

    def email(self) -> str | None:
        return _text_or_none(self.order.billing_email)

    def phone(self) -> str | None:
        phone = self.order.billing_phone
        # django-phonenumber-field's PhoneNumber; E.164 is what TikTok hashes.
        return _text_or_none(getattr(phone, "as_e164", phone))

    def country(self) -> str | None:
        return clean_country(self.order.billing_country_code)


def _text_or_none(value) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def order_for_payment(payment):
    """The shop's order that ``payment`` pays for, as the configured ``ORDER_ADAPTER`` reads it.

    The adapter's ``order_for_payment(payment)`` decides where it has one (PaymentAdapter: the
    payment itself); otherwise the payment's ``order`` attribute is the order.
    """
    adapter_class = configured_adapter_class()
    hook = getattr(adapter_class, "order_for_payment", None)
    if hook is not None:
        return hook(payment)
    if not hasattr(payment, ORDER_ATTRIBUTE):
        raise TikTokTrackingImproperlyConfigured(_no_order_message(type(payment)))
    return getattr(payment, ORDER_ATTRIBUTE)


def _no_order_message(payment_model):
    return (
        f"{payment_model.__module__}.{payment_model.__qualname__} has no {ORDER_ATTRIBUTE!r} "
        f"attribute and {conf.SETTING_NAME}['ORDER_ADAPTER'] = {conf.get('ORDER_ADAPTER')!r} "
        "defines no order_for_payment(payment): the payment's order cannot be found."
    )


def on_status_changed(sender, instance, **kwargs):
    """Send ``payment_completed`` when ``instance`` is CONFIRMED; never raise into django-payments.

    django-payments sends ``status_changed`` on every ``change_status()``, also when the status
    does not change (a provider calling back twice, a capture confirming twice) and after a
    refund is reversed. Each sends ``payment_completed`` again, and each lands on the row the
    first one recorded: the event_id is derived from the order, and the outbox keeps one row per
    event_id. The signal carries no request (it often comes from a provider's callback), so the
    event is built from what ``capture_context`` stored at checkout.
    """
    if instance.status != PaymentStatus.CONFIRMED:
        return
    try:
        order = order_for_payment(instance)
    except Exception:
        # Raising here would fail the provider's callback, and django-payments' callback view
        # would roll the confirmed status back with it.
        logger.exception(
            "No TikTok purchase for payment %s: its order could not be found", instance.pk
        )
        return
    if order is None:
        logger.error("No TikTok purchase for payment %s: it belongs to no order", instance.pk)
        return
    # send_robust: another receiver of the shop's failing must not fail the payment either.
    for receiver, response in payment_completed.send_robust(
        sender=type(order), order=order, request=None
    ):
        if isinstance(response, Exception):
            logger.error(
                "A payment_completed receiver (%r) failed for payment %s",
                receiver,
                instance.pk,
                exc_info=response,
            )


def connect():
    """Listen to django-payments' ``status_changed`` (done by the app's ``ready()``)."""
    status_changed.connect(on_status_changed, dispatch_uid=DISPATCH_UID)


def disconnect():
    """Stop listening; True if the receiver was connected."""
    return status_changed.disconnect(dispatch_uid=DISPATCH_UID)


def check_configuration(app_configs=None, **kwargs):
    """System check: the core app is installed and a confirmed payment can find its order."""
    errors = []
    if not app_registry.is_installed("tiktok_tracking"):
        errors.append(
            checks.Error(
                "tiktok_tracking.integrations.payments is installed without tiktok_tracking.",
                hint="Add 'tiktok_tracking' to INSTALLED_APPS: it records the purchases.",
                id="tiktok_tracking.payments.E002",
            )
        )
    try:
        adapter_class = configured_adapter_class()
    except TikTokTrackingError:
        return errors  # tiktok_tracking.E004 reports it
    if hasattr(adapter_class, "order_for_payment"):
        return errors
    payment_model = _payment_model()
    if payment_model is not None and not hasattr(payment_model, ORDER_ATTRIBUTE):
        errors.append(
            checks.Error(
                _no_order_message(payment_model),
                hint=(
                    "If the payment is the order, set ORDER_ADAPTER to "
                    "'tiktok_tracking.integrations.payments.PaymentAdapter'; otherwise give "
                    "your adapter an order_for_payment(payment) classmethod."
                ),
                id="tiktok_tracking.payments.E001",
            )
        )
    return errors


def _payment_model():
    """The model ``PAYMENT_MODEL`` names, or None where it names none (django-payments says so)."""
    try:
        return app_registry.get_model(getattr(settings, "PAYMENT_MODEL", None) or "")
    except (LookupError, ValueError):
        return None
