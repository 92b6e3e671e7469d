"""payment_completed -> outbox row in the shop's transaction -> delivery enqueued after commit."""

import logging
from functools import partial

from django.db import transaction
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.adapters import get_adapter_class
from tiktok_tracking.context import (
    context_from_request,
    merge_contexts,
    save_context,
    stored_context,
)
from tiktok_tracking.events import build_event, event_id_for, read_order
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.signals import payment_completed

logger = logging.getLogger(__name__)


def connect():
    payment_completed.connect(
        on_payment_completed, dispatch_uid="tiktok_tracking.on_payment_completed"
    )


def on_payment_completed(sender, order, request=None, event_id_suffix=None, **kwargs):
    """Record the purchase; never raise into the shop's payment code."""
    if not conf.get("ENABLED"):
        return None
    try:
        return record_purchase(order, request=request, event_id_suffix=event_id_suffix)
    except Exception:
        # The payment has succeeded; losing the checkout over tracking would be worse than
        # losing the event. The error is logged loudly and the reconcile command finds the gap.
        logger.exception("Could not record the TikTok purchase event of an order")
        return None


def record_purchase(order, *, request=None, event_id_suffix=None, now=None):
    """Write the purchase row for ``order`` (once) and enqueue its delivery after commit.

    Returns the TrackedEvent row, new or existing.
    """
    from tiktok_tracking.models import TrackedEvent

    now = now or timezone.now()
    pixel_id = conf.require("PIXEL_ID")
    event_name = conf.get("PURCHASE_EVENT")
    adapter = get_adapter_class(conf.get("ORDER_ADAPTER"))(order)
    order_id = adapter.order_id()
    event_id = event_id_for(event_name, order_id, event_id_suffix)

    # A webhook or cron has no browser request: it sends what the checkout captured.
    context = stored_context(order_id)
    if request is not None:
        context = merge_contexts(context_from_request(request), context)
        save_context(order_id, context)

    defaults = {"order_id": order_id, "event_time": now, "next_attempt_at": now}
    try:
        facts = read_order(adapter)
    except InvalidOrderData as exc:
        # Kept as a failed row so the admin shows the order and the reason; sending it would
        # only earn a 40002 from TikTok.
        logger.warning("Order %s has invalid tracking data: %s", order_id, exc)
        defaults.update(
            status=TrackedEvent.Status.FAILED,
            payload={},
            last_error=f"Invalid order data: {exc}",
        )
    else:
        defaults["payload"] = build_event(
            event_name, facts, event_time=now, context=context, event_id_suffix=event_id_suffix
        )

    with transaction.atomic():
        row, created = TrackedEvent.objects.get_or_create(
            pixel_id=pixel_id, event=event_name, event_id=event_id, defaults=defaults
        )
    if created and row.status == TrackedEvent.Status.PENDING:
        transaction.on_commit(partial(enqueue_delivery, [row.pk]), robust=True)
    return row


def enqueue_delivery(tracked_event_ids):
    """Ask a worker to deliver now. Best effort: the sweeper delivers whatever this misses."""
    from tiktok_tracking.tasks import deliver_events

    try:
        # retry=False: a broker that is down must cost the request one failed connect, not
        # Celery's default publish retries.
        deliver_events.apply_async(args=[list(tracked_event_ids)], retry=False)
    except Exception:
        logger.warning(
            "Could not enqueue TikTok delivery (the sweeper will deliver it)", exc_info=True
        )
