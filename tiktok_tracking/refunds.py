"""Refunds and cancellations: recorded against the order's purchase, never sent to TikTok."""

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.adapters import (
    adapter_for,
    clean_country,
    clean_currency,
    clean_order_id,
    clean_value,
)
from tiktok_tracking.boundaries import fit_fields
from tiktok_tracking.events import event_id_for
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.models import Refund

logger = logging.getLogger(__name__)

FULL_REFUND_KEY = "full"
REFUND_KEY_LENGTH = Refund._meta.get_field("refund_key").max_length


@dataclass(frozen=True)
class RefundFacts:
    """What one refund takes back, worked out from the order and the signal (no database)."""

    amount: Decimal
    full: bool
    refund_key: str
    capped: bool = False


def refund_facts(order_value, amount=None, refund_id=None):
    """The refund ``amount`` (None: all of it) of an order worth ``order_value``.

    A refund cannot take back more than was paid: a larger amount counts as the whole order
    (``capped``). Without the shop's ``refund_id``, a full refund is one per order and a partial
    one is told apart by its amount: two partial refunds of the same amount need refund ids.
    """
    if amount is None:
        refunded, capped = order_value, False
    else:
        refunded = clean_value(amount, field="amount")
        capped = refunded > order_value
        refunded = min(refunded, order_value)
    full = refunded >= order_value
    if refund_id is not None and str(refund_id).strip():
        key = str(refund_id).strip()
        if len(key) > REFUND_KEY_LENGTH:
            raise InvalidOrderData(
                "refund_id", f"must be at most {REFUND_KEY_LENGTH} characters, got {len(key)}"
            )
    elif full:
        key = FULL_REFUND_KEY
    else:
        key = f"partial:{plain_amount(refunded)}"
    return RefundFacts(amount=refunded, full=full, refund_key=key, capped=capped)


def plain_amount(value):
    """``value`` without trailing zeros or an exponent: 89.99, 100 (not 1E+2)."""
    return f"{value.normalize():f}"


def net_value(order_value, refunded):
    """What the shop keeps of an order after ``refunded``: never below zero."""
    return max(order_value - refunded, Decimal(0))


def record_refund(order, *, amount=None, refund_id=None, now=None):
    """Record a refund of ``order`` once per refund; log, never raise, on failure.

    Returns the Refund row (the one recorded earlier when the shop signals the same refund
    again), or None when nothing could be recorded.
    """
    if not conf.get("ENABLED"):
        return None
    try:
        return _record_refund(order, amount=amount, refund_id=refund_id, now=now)
    except Exception:
        # The refund has happened in the shop; failing its code over a figure would be worse.
        logger.exception("Could not record the refund of an order")
        return None


def _record_refund(order, *, amount, refund_id, now):
    adapter = adapter_for(order)
    order_id = clean_order_id(adapter.order_id())
    order_value = clean_value(adapter.value())
    facts = refund_facts(order_value, amount, refund_id)
    if facts.capped:
        logger.warning(
            "A refund of order %s is larger than the order (%s): recorded as the whole order",
            order_id,
            order_value,
        )
    try:
        country = clean_country(adapter.country()) or ""
    except (InvalidOrderData, ValueError):
        country = ""
    values = fit_fields(
        Refund,
        {
            "event_id": event_id_for(conf.get("PURCHASE_EVENT"), order_id),
            "amount": facts.amount,
            "currency": clean_currency(adapter.currency()),
            "full": facts.full,
            "order_value": order_value,
            "country": country,
            "refunded_at": now or timezone.now(),
        },
    )
    try:
        # A savepoint: a refund recorded twice at once must not break the shop's transaction.
        with transaction.atomic():
            return Refund.objects.create(order_id=order_id, refund_key=facts.refund_key, **values)
    except IntegrityError:
        return Refund.objects.get(order_id=order_id, refund_key=facts.refund_key)


def refunded_amounts(order_ids):
    """``{order_id: amount refunded}`` for the orders of ``order_ids`` that have refunds."""
    return dict(
        Refund.objects.filter(order_id__in=list(order_ids))
        .values("order_id")
        .annotate(total=Sum("amount"))
        .values_list("order_id", "total")
    )
