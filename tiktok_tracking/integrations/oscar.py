"""django-oscar: an adapter for oscar's Order, and payment_completed once per paid order.

Add ``"tiktok_tracking.integrations.oscar.TikTokOscarConfig"`` to ``INSTALLED_APPS`` and set
``TIKTOK_TRACKING["ORDER_ADAPTER"] = "tiktok_tracking.integrations.oscar.OscarOrderAdapter"``.

Oscar's checkout takes the payment before it places the order, so by default an order counts as
paid once it is placed. Shops that take payment later (bank transfer, invoice, a gateway's
webhook) name the order statuses or payment event types that mean "paid" (see
:class:`TikTokOscarConfig`); their purchase is sent when the order gets there.
"""

import contextvars
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.signals import post_save

from tiktok_tracking import conf
from tiktok_tracking.adapters import (
    OrderAdapter,
    adapter_for,
    clean_contents,
    clean_country,
    clean_currency,
    clean_order_id,
    clean_value,
    configured_adapter_class,
)
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.pixels import configured_pixels
from tiktok_tracking.signals import payment_completed

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")


# The order adapter ----------------------------------------------------------------------------


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class OscarOrderAdapter(OrderAdapter):
    """Reads an oscar ``Order`` (or a forked one with the same fields) for TikTok.

    The order number is the order id, ``total_incl_tax`` the value; each line is sent with its
    UPC (the product's id when it has none), title, quantity and unit price including tax. The
    email is the customer's account email or the guest email, the phone and country those of
    the shipping address (the billing address when there is none), the external id the user's
    id. Subclass it to send something else, e.g. ``partner_sku`` as the content id.
    """

    def order_id(self) -> str:
        return clean_order_id(self.order.number)

    def value(self) -> Decimal:
        total = self.order.total_incl_tax
        if total is None:
            raise InvalidOrderData("value", "the order has no total_incl_tax")
        return clean_value(total)

    def currency(self) -> str:
        return clean_currency(self.order.currency)

    def contents(self) -> list[dict]:
        return clean_contents([self.line_content(line) for line in self.order.lines.all()])

    def line_content(self, line) -> dict:
        """One order line as an unvalidated ``{content_id, content_name, quantity, price}``."""
        # The line keeps the UPC and title the product had when it was bought; product_id is
        # None once the product is deleted, and the partner's SKU is the last thing left.
        content_id = _text(line.upc) or line.product_id or _text(line.partner_sku)
        return {
            "content_id": content_id,
            "content_name": _text(line.title),
            "quantity": line.quantity,
            "price": self.unit_price(line),
        }

    def unit_price(self, line):
        """The line's unit price including tax, before order-level discounts (as oscar shows it)."""
        if line.unit_price_incl_tax is not None:
            return line.unit_price_incl_tax
        # unit_price_incl_tax is optional on oscar's model; the line price is not.
        if line.line_price_before_discounts_incl_tax is not None and line.quantity:
            unit = Decimal(line.line_price_before_discounts_incl_tax) / line.quantity
            return unit.quantize(CENT, rounding=ROUND_HALF_UP)
        return None

    def email(self) -> str | None:
        user = self.order.user
        return _text(getattr(user, "email", None)) or _text(self.order.guest_email)

    def phone(self) -> str | None:
        for address in self._addresses():
            phone = getattr(address, "phone_number", None)
            if phone:
                # django-phonenumber-field's PhoneNumber: E.164 when it could be parsed.
                if getattr(phone, "is_valid", None) and phone.is_valid():
                    return phone.as_e164
                return _text(phone)
        return None

    def external_id(self) -> str | None:
        return _text(self.order.user_id)

    def country(self) -> str | None:
        for address in self._addresses():
            # Oscar's Country is keyed by its ISO 3166-1 alpha-2 code: no query needed.
            code = getattr(address, "country_id", None)
            if code:
                return clean_country(code)
        return None

    def _addresses(self):
        return [
            address
            for address in (self.order.shipping_address, self.order.billing_address)
            if address is not None
        ]


# When an order is paid ------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRule:
    """What makes an oscar order paid: being placed (the default), or what the shop names.

    ``paid_statuses``: order statuses that mean the order is paid (list every status a paid
    order can be in, e.g. ``("Paid", "Shipped")``). ``paid_payment_event_types``: names (or
    codes) of payment event types, e.g. ``("Settled",)``; the order is paid once their amounts
    add up to its total. With neither, placing the order is the payment.
    """

    paid_statuses: frozenset = frozenset()
    paid_payment_event_types: frozenset = frozenset()

    @property
    def paid_when_placed(self) -> bool:
        return not (self.paid_statuses or self.paid_payment_event_types)


def is_paid(rule: PaymentRule, *, status, settled_amount, total) -> bool:
    """Whether an order with this status, this much settled and this total counts as paid."""
    if rule.paid_when_placed:
        return True
    if status in rule.paid_statuses:
        return True
    if rule.paid_payment_event_types and settled_amount is not None and total is not None:
        return settled_amount >= total
    return False


def settled_amount(order, event_types) -> Decimal | None:
    """The sum of the order's payment events of ``event_types`` (by name or code), or None."""
    if not event_types:
        return None
    matching = Q(event_type__name__in=event_types) | Q(event_type__code__in=event_types)
    total = order.payment_events.filter(matching).aggregate(total=Sum("amount"))["total"]
    return total or Decimal(0)


def order_is_paid(order, rule: PaymentRule) -> bool:
    """Whether ``order`` is paid under ``rule``; reads the database only for a deferred rule."""
    if rule.paid_when_placed:
        return True
    return is_paid(
        rule,
        status=order.status,
        settled_amount=settled_amount(order, rule.paid_payment_event_types),
        total=order.total_incl_tax,
    )


# The wiring -----------------------------------------------------------------------------------

_rule = PaymentRule()

# The shopper's request while oscar's checkout places an order: (order number, request). Oscar's
# order_placed carries no request, yet it fires inside the checkout view, after post_payment
# (which carries the view) and before post_checkout (which carries the request).
_checkout_request = contextvars.ContextVar("tiktok_oscar_checkout_request", default=None)

_DISPATCH_UID = "tiktok_tracking.integrations.oscar"


def _receivers():
    """``(signal, receiver, sender)`` for every oscar signal the integration listens to."""
    try:
        from oscar.apps.checkout.signals import post_checkout, post_payment
    except ImportError as exc:
        raise ImproperlyConfigured(
            "The TikTok oscar integration needs django-oscar: "
            'pip install "django-tiktok-tracking[oscar]"'
        ) from exc
    from oscar.apps.order.signals import order_placed, order_status_changed
    from oscar.core.loading import get_model

    return [
        (post_payment, on_post_payment, None),
        (order_placed, on_order_placed, None),
        (post_checkout, on_post_checkout, None),
        (order_status_changed, on_order_status_changed, None),
        (post_save, on_payment_event_saved, get_model("order", "PaymentEvent")),
        (request_finished, on_request_finished, None),
    ]


def connect(paid_statuses=(), paid_payment_event_types=()):
    """Send ``payment_completed`` for oscar's paid orders; called by :class:`TikTokOscarConfig`.

    Call it from your own ``AppConfig.ready()`` instead of installing the app config if you
    prefer; calling it again replaces the rule.
    """
    global _rule
    _rule = PaymentRule(
        _names("paid_statuses", paid_statuses),
        _names("paid_payment_event_types", paid_payment_event_types),
    )
    for signal, receiver, sender in _receivers():
        signal.connect(receiver, sender=sender, dispatch_uid=f"{_DISPATCH_UID}.{receiver.__name__}")


def _names(setting, values) -> frozenset:
    # A bare string would be read letter by letter: "Paid" as {"P", "a", "i", "d"}.
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise TypeError(f"{setting} must be a list of strings, got {values!r}")
    values = list(values)
    if not all(isinstance(value, str) and value.strip() for value in values):
        raise TypeError(f"{setting} must be a list of non-empty strings, got {values!r}")
    return frozenset(values)


def disconnect():
    """Stop listening to oscar's signals."""
    for signal, receiver, sender in _receivers():
        signal.disconnect(
            receiver, sender=sender, dispatch_uid=f"{_DISPATCH_UID}.{receiver.__name__}"
        )


def payment_rule() -> PaymentRule:
    """The rule in force."""
    return _rule


def on_post_payment(sender, view, **kwargs):
    # Oscar sends this with send_robust, but an error here is still worth a log line.
    try:
        number = view.checkout_session.get_order_number()
        if number is not None:
            _checkout_request.set((str(number), view.request))
    except Exception:
        logger.exception("Could not note the checkout request of an oscar order")


def on_order_placed(sender, order, **kwargs):
    _track(order, request=_request_of(order))


def on_post_checkout(sender, order, request=None, **kwargs):
    try:
        _track(order, request=request)
    finally:
        _checkout_request.set(None)


def on_order_status_changed(sender, order, new_status=None, **kwargs):
    if new_status in _rule.paid_statuses:
        # Never the request: a status is changed by staff in the dashboard, not by the shopper.
        _track(order, request=None)


def on_payment_event_saved(sender, instance, created=False, raw=False, **kwargs):
    if created and not raw and _rule.paid_payment_event_types:
        order = instance.order
        # Inside the checkout this is the shopper's request; from a webhook, there is none.
        _track(order, request=_request_of(order))


def on_request_finished(sender, **kwargs):
    _checkout_request.set(None)


def _request_of(order):
    held = _checkout_request.get()
    if held is not None and held[0] == str(order.number):
        return held[1]
    return None


def _track(order, *, request):
    """Send ``payment_completed`` if ``order`` is paid and has no purchase yet; else keep the
    shopper's context for the payment to come. Never raises into oscar."""
    if not conf.get("ENABLED"):
        return
    try:
        # A savepoint: a failing statement must not abort the shop's own transaction.
        with transaction.atomic():
            if order_is_paid(order, _rule):
                if not _purchase_recorded(order):
                    _send_payment_completed(order, request)
            elif request is not None:
                _keep_context(order, request)
    except Exception:
        logger.exception("Could not track the TikTok purchase of an oscar order")


def _send_payment_completed(order, request):
    # Robust: another receiver of the shop's that raises must neither reach oscar nor undo the
    # purchase this app's receiver has just recorded.
    answers = payment_completed.send_robust(sender=type(order), order=order, request=request)
    for receiver, answer in answers:
        if isinstance(answer, Exception):
            logger.error(
                "A payment_completed receiver (%s) failed for an oscar order",
                getattr(receiver, "__qualname__", receiver),
                exc_info=answer,
            )


def _adapter(order):
    return adapter_for(order)


def _purchase_recorded(order) -> bool:
    """Whether the outbox already holds this order's purchase (checkout fires several signals).

    The receiver's unique constraint is what guarantees one row; this spares the shop's other
    ``payment_completed`` receivers a second call for the same payment.
    """
    from tiktok_tracking.events import event_id_for
    from tiktok_tracking.models import TrackedEvent

    event = conf.get("PURCHASE_EVENT")
    try:
        order_id = _adapter(order).order_id()
        event_id = event_id_for(event, order_id)
    except InvalidOrderData:
        # The receiver records such an order as invalid, once, under a key of its own.
        return False
    # For any pixel: the receiver writes the rows of all the order's pixels at once. Named by
    # pixel, the lookup runs on the outbox's unique index (it keeps none on order_id).
    pixel_ids = [pixel.pixel_id for pixel in configured_pixels()]
    return TrackedEvent.objects.filter(
        pixel_id__in=pixel_ids, event=event, event_id=event_id
    ).exists()


def _keep_context(order, request):
    """Store the checkout's browser context for a payment that arrives without a browser."""
    from tiktok_tracking.context import context_from_request, save_context, snapshot_from_request

    adapter = _adapter(order)
    try:
        country = adapter.country()
    except InvalidOrderData:
        country = None
    save_context(
        adapter.order_id(),
        context_from_request(request),
        snapshot_from_request(request, country=country),
    )


# Installing it --------------------------------------------------------------------------------


def check_oscar_integration(app_configs=None, **kwargs):
    """Warn about an adapter that cannot read oscar's orders, and a paid status oscar lacks."""
    from django.conf import settings

    messages = []
    try:
        adapter_class = configured_adapter_class()
    except Exception:
        adapter_class = None  # tiktok_tracking.E004 reports it
    if adapter_class is not None and not issubclass(adapter_class, OscarOrderAdapter):
        messages.append(
            checks.Warning(
                "TIKTOK_TRACKING['ORDER_ADAPTER'] is not an OscarOrderAdapter: oscar's orders "
                "have no total, items or email attributes for the default adapter to read.",
                hint="Set it to 'tiktok_tracking.integrations.oscar.OscarOrderAdapter' "
                "or a subclass.",
                id="tiktok_tracking.oscar.W001",
            )
        )
    messages.extend(_check_paid_statuses(settings))
    return messages


def _check_paid_statuses(settings):
    """W002: a paid status no order can ever be in, so that no purchase is ever sent for it.

    An order starts in ``OSCAR_INITIAL_ORDER_STATUS`` and ``set_status()`` moves it only along
    ``OSCAR_ORDER_STATUS_PIPELINE``; oscar's default pipeline is empty, and then no order ever
    leaves its first status.
    """
    if not _rule.paid_statuses:
        return []
    pipeline = getattr(settings, "OSCAR_ORDER_STATUS_PIPELINE", None) or {}
    reachable = set(pipeline) | {status for targets in pipeline.values() for status in targets}
    initial = getattr(settings, "OSCAR_INITIAL_ORDER_STATUS", None)
    if initial:
        reachable.add(initial)
    unknown = sorted(_rule.paid_statuses - reachable)
    if not unknown:
        return []
    if not pipeline:
        message = (
            f"paid_statuses names {unknown}, but OSCAR_ORDER_STATUS_PIPELINE is empty (oscar's "
            "default): set_status() moves no order anywhere, so none is ever paid."
        )
        hint = (
            "Define OSCAR_ORDER_STATUS_PIPELINE with the statuses your orders move through, "
            'e.g. {"Pending": ("Paid", "Cancelled"), "Paid": ("Shipped",), ...}.'
        )
    else:
        # Statuses are compared exactly: a typo ("paid") would silently send no purchase at all.
        message = f"paid_statuses names statuses oscar's pipeline does not have: {unknown}."
        hint = "Use the statuses of OSCAR_ORDER_STATUS_PIPELINE, spelled alike."
    return [checks.Warning(message, hint=hint, id="tiktok_tracking.oscar.W002")]


class TikTokOscarConfig(AppConfig):
    """The integration as an app: add it to ``INSTALLED_APPS`` after oscar's apps.

    A shop that takes payment after placing the order subclasses it in its own ``apps.py``,
    sets ``paid_statuses`` and/or ``paid_payment_event_types`` (see :class:`PaymentRule`), and
    lists the subclass instead.
    """

    name = "tiktok_tracking.integrations.oscar"
    # Not "oscar": that label is oscar's own.
    label = "tiktok_tracking_oscar"
    verbose_name = "TikTok tracking for django-oscar"
    paid_statuses = ()
    paid_payment_event_types = ()

    def ready(self):
        checks.register(check_oscar_integration, checks.Tags.compatibility)
        connect(
            paid_statuses=self.paid_statuses,
            paid_payment_event_types=self.paid_payment_event_types,
        )
