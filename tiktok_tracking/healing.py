"""The scan of recently paid orders that records every purchase the outbox never got.

The outbox row is written in the payment's transaction, and written again after it when a
passing database error kept it out (:mod:`tiktok_tracking.rerecording`). A process that dies
in between, a signal the shop forgot to send on one payment path, an order that could not be
read when it was paid: the scan finds each from the shop's own paid orders (``PAID_ORDERS``,
read through the order adapter), so the guarantee does not rest on the first INSERT.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.adapters import clean_order_id, configured_adapter_class
from tiktok_tracking.reconcile import LOOKUP_CHUNK, paid_orders_source, recorded_order_ids
from tiktok_tracking.recording import record_order_event

logger = logging.getLogger(__name__)


@dataclass
class HealReport:
    """What one scan found: orders read, purchases recorded now, orders it could not record."""

    scanned: int = 0
    recorded: int = 0
    unrecorded: int = 0
    # Orders whose id the adapter cannot read: recorded under an "invalid_" id when paid.
    unreadable: int = 0


def heal_window(now):
    """``(since, until)``: the paid orders a scan at ``now`` reads (pure)."""
    since = now - timedelta(hours=conf.get("HEAL_WINDOW_HOURS"))
    until = now - timedelta(seconds=conf.get("HEAL_GRACE_SECONDS"))
    return since, until


def record_missing_purchases(now=None):
    """Record the purchase of every recently paid order that has no row, or only placeholders.

    Returns a :class:`HealReport`, or None when the shop names no ``PAID_ORDERS`` or tracking is
    off (``ENABLED``). Orders are read one by one and looked up in chunks, as the reconcile
    command does.
    """
    source = paid_orders_source()
    if source is None or not conf.get("ENABLED"):
        return None
    since, until = heal_window(now or timezone.now())
    if until <= since:
        return HealReport()
    adapter_class = configured_adapter_class()
    event_name = conf.get("PURCHASE_EVENT")
    orders = source(since, until)
    if isinstance(orders, QuerySet):
        orders = orders.iterator(chunk_size=2000)
    report = HealReport()
    waiting = {}
    for order in orders:
        report.scanned += 1
        try:
            order_id = clean_order_id(adapter_class(order).order_id())
        except Exception:
            report.unreadable += 1
            continue
        waiting[order_id] = order
        if len(waiting) >= LOOKUP_CHUNK:
            _record_unrecorded(waiting, event_name, report)
            waiting = {}
    _record_unrecorded(waiting, event_name, report)
    if report.recorded or report.unrecorded:
        logger.warning(
            "TikTok scan of paid orders: %d order(s) had no %s event; %d recorded now, "
            "%d could not be",
            report.recorded + report.unrecorded,
            event_name,
            report.recorded,
            report.unrecorded,
        )
    return report


def _record_unrecorded(waiting, event_name, report):
    if not waiting:
        return
    recorded = recorded_order_ids(waiting, [event_name], placeholders=False)
    for order_id, order in waiting.items():
        if order_id in recorded:
            continue
        rows = record_order_event(event_name, order)
        if any(row.payload for row in rows):
            report.recorded += 1
        else:
            report.unrecorded += 1
