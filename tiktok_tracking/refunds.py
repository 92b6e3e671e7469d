"""Refunds and cancellations: recorded against the order's purchase, never sent to TikTok."""

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
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
from tiktok_tracking.reconcile import LOOKUP_CHUNK, purchase_names, recorded_order_ids

logger = logging.getLogger(__name__)

FULL_REFUND_KEY = "full"
REFUND_KEY_LENGTH = Refund._meta.get_field("refund_key").max_length


@dataclass(frozen=True)
class RefundFacts:
    """What one refund asks for and takes back, from the order, the order's earlier refunds and
    the signal (no database)."""

    # What the signal asked for: the order's value for a whole refund.
    requested: Decimal
    # What it takes back: never more than the order's earlier refunds left of it.
    amount: Decimal
    full: bool
    refund_key: str
    # It asked for more than was left (the order's value, less the earlier refunds).
    capped: bool = False


def refund_facts(order_value, amount=None, refund_id=None, already_refunded=Decimal(0)):
    """The refund ``amount`` (None: all of it) of an order worth ``order_value`` of which
    earlier refunds took ``already_refunded``.

    An order's refunds cannot take back more than was paid for it: a refund takes what it asks
    for, or only what the earlier ones left (``capped``), so three refunds of 60 of an order of
    100 take 60, 40 and 0. Without the shop's ``refund_id``, a full refund is one per order and
    a partial one is told apart by the amount it asked for: two partial refunds of the same
    amount need refund ids.
    """
    requested = order_value if amount is None else clean_value(amount, field="amount")
    left = max(order_value - already_refunded, Decimal(0))
    taken = min(requested, left)
    full = requested >= order_value
    if refund_id is not None and str(refund_id).strip():
        key = str(refund_id).strip()
        if len(key) > REFUND_KEY_LENGTH:
            raise InvalidOrderData(
                "refund_id", f"must be at most {REFUND_KEY_LENGTH} characters, got {len(key)}"
            )
    elif full:
        key = FULL_REFUND_KEY
    else:
        key = f"partial:{plain_amount(requested)}"
    return RefundFacts(
        requested=requested, amount=taken, full=full, refund_key=key, capped=taken < requested
    )


@dataclass(frozen=True)
class EarlierRefunds:
    """What an order's recorded refunds leave for the next one (no database)."""

    # The order's value as its first refund recorded it, None before any: a shop that lowers
    # an order's total as it refunds must not shrink what is left of it.
    order_value: Decimal | None
    taken: Decimal
    next_sequence: int


def earlier_refunds(rows):
    """:class:`EarlierRefunds` of an order's refunds, ``(order_value, amount, sequence)`` each,
    first recorded first."""
    rows = list(rows)
    sequences = [sequence for _value, _amount, sequence in rows if sequence is not None]
    return EarlierRefunds(
        order_value=rows[0][0] if rows else None,
        taken=sum((amount for _value, amount, _sequence in rows), Decimal(0)),
        # Beyond every number in use, and the same for two refunds that read the same rows:
        # the second then meets the first's number, and reads again.
        next_sequence=max([*sequences, len(rows)]) + 1,
    )


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


# How many times a refund reads its order's refunds again after another refund of the same
# order took its number first: each retry follows a commit of another refund of that order.
RECORD_ATTEMPTS = 5


def _record_refund(order, *, amount, refund_id, now):
    adapter = adapter_for(order)
    order_id = clean_order_id(adapter.order_id())
    order_value_now = clean_value(adapter.value())
    # Bad input fails here, before anything is read or written.
    refund_facts(order_value_now, amount, refund_id)
    try:
        country = clean_country(adapter.country()) or ""
    except (InvalidOrderData, ValueError):
        country = ""
    values = {
        "event_id": event_id_for(conf.get("PURCHASE_EVENT"), order_id),
        "currency": clean_currency(adapter.currency()),
        "country": country,
        "refunded_at": now or timezone.now(),
        # Paid: the shop signalled the payment, so the purchase was recorded (a placeholder
        # of an order that could not be read included). A refund of an order paid before the
        # app was installed, or never paid, is kept, but takes nothing back from the figures.
        "order_paid": order_id in recorded_order_ids([order_id], purchase_names()),
    }
    for _attempt in range(RECORD_ATTEMPTS):
        try:
            # A savepoint: a refund recorded twice at once must not break the shop's transaction.
            with transaction.atomic():
                return _record_once(order_id, order_value_now, amount, refund_id, values)
        except IntegrityError:
            # Another refund of the order took this key (the same refund, signalled twice) or
            # this number (another refund of the order, committed meanwhile): read again.
            continue
    raise RuntimeError(
        f"Could not record a refund of order {order_id}: {RECORD_ATTEMPTS} other refunds of "
        "it were recorded at the same time"
    )


def _record_once(order_id, order_value_now, amount, refund_id, values):
    rows = Refund.objects.filter(order_id=order_id).order_by("pk")
    earlier = earlier_refunds(rows.values_list("order_value", "amount", "sequence"))
    order_value = order_value_now if earlier.order_value is None else earlier.order_value
    facts = refund_facts(order_value, amount, refund_id, already_refunded=earlier.taken)
    recorded = rows.filter(refund_key=facts.refund_key).first()
    if recorded is not None:
        return recorded
    if facts.capped:
        logger.warning(
            "A refund of order %s asks for %s, but %s of its %s is left after earlier "
            "refunds: recorded as taking back %s",
            order_id,
            plain_amount(facts.requested),
            plain_amount(net_value(order_value, earlier.taken)),
            plain_amount(order_value),
            plain_amount(facts.amount),
        )
    if not values["order_paid"]:
        logger.info(
            "A refund of order %s, whose purchase was never recorded: kept, not counted",
            order_id,
        )
    fields = fit_fields(
        Refund,
        {
            **values,
            "requested": facts.requested,
            "amount": facts.amount,
            "full": facts.full,
            "order_value": order_value,
        },
    )
    return Refund.objects.create(
        order_id=order_id,
        refund_key=facts.refund_key,
        sequence=earlier.next_sequence,
        **fields,
    )


def counted_refunds(refunds):
    """``refunds`` (a Refund queryset) less those of orders never known as paid.

    A refund recorded before its order's purchase was (a purchase the scan of paid orders
    recorded later) counts from the moment the purchase is recorded.
    """
    unknown = refunds.filter(order_paid=False).order_by().values_list("order_id", flat=True)
    paid_since = paid_since_refunded(unknown.distinct())
    return refunds.filter(Q(order_paid=True) | Q(order_id__in=sorted(paid_since)))


def is_counted(refund, paid_since):
    """Whether ``refund`` counts in the figures, ``paid_since`` being
    :func:`paid_since_refunded` of the orders of the refunds not known as paid."""
    return refund.order_paid or refund.order_id in paid_since


def paid_since_refunded(order_ids):
    """Which of ``order_ids``, orders refunded while no purchase of theirs was recorded, have
    one recorded now (outbox or archive)."""
    order_ids = sorted(set(order_ids))
    recorded = set()
    for start in range(0, len(order_ids), LOOKUP_CHUNK):
        recorded |= recorded_order_ids(order_ids[start : start + LOOKUP_CHUNK], purchase_names())
    return recorded


def refunded_amounts(order_ids):
    """``{order_id: amount refunded}`` for the orders of ``order_ids`` that have refunds, paid or
    not: never more than each order's value."""
    return dict(
        Refund.objects.filter(order_id__in=list(order_ids))
        .values("order_id")
        .annotate(total=Sum("amount"))
        .values_list("order_id", "total")
    )
