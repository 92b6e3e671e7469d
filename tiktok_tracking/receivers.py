"""payment_completed -> outbox row in the shop's transaction -> delivery enqueued after commit."""

import logging
import uuid
from functools import partial

from django.db import IntegrityError, transaction
from django.db.models import Subquery
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.adapters import get_adapter_class
from tiktok_tracking.consent import SERVER, decide, policy_from_settings
from tiktok_tracking.context import (
    ConsentSnapshot,
    context_from_request,
    merge_contexts,
    save_context,
    snapshot_from_request,
    stored_context,
)
from tiktok_tracking.events import build_event, event_id_for, match_key_mask, read_order
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.hashing import sha256_hex
from tiktok_tracking.publisher import publish_deliver_task, publisher
from tiktok_tracking.signals import payment_completed

logger = logging.getLogger(__name__)

# Rows of orders whose id is unusable: never sent, shown in the admin with the reason.
INVALID_EVENT_ID_PREFIX = "invalid_"


def connect():
    payment_completed.connect(
        on_payment_completed, dispatch_uid="tiktok_tracking.on_payment_completed"
    )


def on_payment_completed(sender, order, request=None, event_id_suffix=None, **kwargs):
    """Record the purchase; never raise into the shop's payment code."""
    return record_order_event(
        conf.get("PURCHASE_EVENT"), order, request=request, event_id_suffix=event_id_suffix
    )


def record_order_event(event_name, order, *, request=None, context=None, snapshot=None, **kw):
    """Record one server-lane event of an order; log, never raise, on failure.

    Returns the TrackedEvent row, or None when nothing could be recorded.
    """
    if not conf.get("ENABLED"):
        return None
    try:
        return _record(event_name, order, request=request, context=context, snapshot=snapshot, **kw)
    except Exception:
        # The payment has succeeded; losing the checkout over tracking would be worse than
        # losing the event. The error is logged loudly and the reconcile command finds the gap.
        logger.exception("Could not record the TikTok %s event of an order", event_name)
        return None


def _record(event_name, order, *, request, context, snapshot, event_id_suffix=None, now=None):
    from tiktok_tracking.models import TrackedEvent

    now = now or timezone.now()
    pixel_id = conf.require("PIXEL_ID")
    adapter = get_adapter_class(conf.get("ORDER_ADAPTER"))(order)
    try:
        order_id = adapter.order_id()
        event_id = event_id_for(event_name, order_id, event_id_suffix)
    except Exception as exc:
        reason = _unreadable_order(exc, "its id")
        return _record_unidentified(event_name, order, pixel_id, reason, now)

    row, created = _insert_once(
        pixel_id,
        event_name,
        event_id,
        partial(
            _insert_event,
            adapter,
            pixel_id=pixel_id,
            event_name=event_name,
            event_id=event_id,
            order_id=order_id,
            request=request,
            context=context,
            snapshot=snapshot,
            suffix=event_id_suffix,
            now=now,
        ),
    )
    if created and row.status == TrackedEvent.Status.PENDING:
        transaction.on_commit(partial(enqueue_delivery, [row.pk]), robust=True)
    return row


def _insert_once(pixel_id, event_name, event_id, insert):
    """``(row, created)``: the row ``insert()`` creates, or the one already recorded.

    One savepoint for all of ``insert``: should a statement fail, the shop's transaction must go
    on (on PostgreSQL an error would otherwise abort it), and the payment must still commit.
    """
    from tiktok_tracking.models import TrackedEvent

    try:
        with transaction.atomic():
            return insert(), True
    except IntegrityError:
        # Already recorded (a second signal for the same payment): the first row stands.
        existing = TrackedEvent.objects.get(pixel_id=pixel_id, event=event_name, event_id=event_id)
        return existing, False


def _unreadable_order(exc, what):
    """Log why the order (``what`` of it) could not be read; the reason kept on its row."""
    if isinstance(exc, InvalidOrderData):
        logger.warning("An order has invalid tracking data in %s: %s", what, exc)
        return f"Invalid order data: {exc}"
    # The shop's adapter failed: a bug to fix, and a row that says so until it is.
    logger.exception("The order adapter could not read %s", what)
    return f"Could not read the order: {type(exc).__name__}: {exc}"


def _insert_event(
    adapter, *, pixel_id, event_name, event_id, order_id, request, context, snapshot, suffix, now
):
    """Resolve the context, build the payload and insert the row, in the caller's savepoint."""
    from tiktok_tracking.models import BrowserReceipt, TrackedEvent

    if context is None:
        # A webhook or cron has no browser request: it sends what the checkout captured.
        context, snapshot = stored_context(order_id)
        if request is not None:
            stored = context is not None
            context = merge_contexts(context_from_request(request), context)
            snapshot = snapshot_from_request(request, country=snapshot and snapshot.country)
            if not stored:
                # No checkout captured this order: keep this request's context for its later
                # server events (a renewal, an upsell charged by webhook).
                save_context(order_id, context, snapshot, exists=False)
    snapshot = snapshot or ConsentSnapshot()

    fields = {
        "pixel_id": pixel_id,
        "event": event_name,
        "event_id": event_id,
        "order_id": order_id,
        "event_time": now,
        "next_attempt_at": now,
        "visitor_id": snapshot.visitor_id,
        "consent_status": snapshot.consent_status or "",
        # The thank-you page's receipt may have come first (a webhook often arrives later):
        # read by the INSERT itself, which spares the checkout a round trip.
        "browser_seen_at": Subquery(
            BrowserReceipt.objects.filter(
                pixel_id=pixel_id, event=event_name, event_id=event_id
            ).values("received_at")[:1]
        ),
    }
    try:
        facts = read_order(adapter)
    except Exception as exc:
        # Kept as a failed row so the admin shows the order and the reason; sending it would
        # only earn a 40002 from TikTok.
        fields.update(
            status=TrackedEvent.Status.FAILED,
            payload={},
            country=snapshot.country or "",
            last_error=_unreadable_order(exc, f"order {order_id}"),
        )
    else:
        country = facts.country or snapshot.country
        decision = decide(
            policy_from_settings(), lane=SERVER, country=country, status=snapshot.consent_status
        )
        fields["country"] = country or ""
        fields["payload"] = build_event(
            event_name,
            facts,
            event_time=now,
            context=context,
            event_id_suffix=suffix,
            limited_data_use=decision.limited_data_use or snapshot.limited_data_use,
        )
        fields["match_keys"] = match_key_mask(fields["payload"])
        if not decision.allowed:
            fields.update(status=TrackedEvent.Status.SUPPRESSED, suppressed_reason=decision.reason)
    row = TrackedEvent.objects.create(**fields)
    # The instance holds the subquery, not its answer: leave the field deferred, so that
    # reading it (rare) loads the stored value.
    del row.browser_seen_at
    return row


def _record_unidentified(event_name, order, pixel_id, reason, now):
    """A failed row for an order whose id cannot make an event_id, so the admin shows it."""
    from tiktok_tracking.models import TrackedEvent

    # A saved order keeps its key, so a repeated signal finds the same row; anything else gets
    # a row of its own.
    key = getattr(order, "pk", None)
    if key is None:
        reference = uuid.uuid4().hex[:24]
    else:
        identity = f"{type(order).__module__}.{type(order).__qualname__}:{key!r}"
        reference = sha256_hex(identity)[:24]
    event_id = f"{INVALID_EVENT_ID_PREFIX}{reference}"
    row, _created = _insert_once(
        pixel_id,
        event_name,
        event_id,
        partial(
            TrackedEvent.objects.create,
            pixel_id=pixel_id,
            event=event_name,
            event_id=event_id,
            order_id=event_id,
            event_time=now,
            next_attempt_at=now,
            status=TrackedEvent.Status.FAILED,
            payload={},
            last_error=reason,
        ),
    )
    return row


def enqueue_delivery(tracked_event_ids):
    """Ask a worker to deliver now. Best effort: the sweeper delivers whatever this misses.

    Published from a background thread (``ENQUEUE_IN_BACKGROUND``) so that a slow or dead
    broker never holds up the checkout; inline when Celery runs tasks eagerly (tests).
    """
    from tiktok_tracking.tasks import deliver_events

    if conf.get("ENQUEUE_IN_BACKGROUND") and not deliver_events.app.conf.task_always_eager:
        publisher.submit(tracked_event_ids)
        return
    try:
        publish_deliver_task(list(tracked_event_ids))
    except Exception:
        logger.warning(
            "Could not enqueue TikTok delivery (the sweeper will deliver it)", exc_info=True
        )
