"""payment_completed -> outbox row in the shop's transaction -> delivery enqueued after commit."""

import logging
import uuid
from functools import lru_cache, partial

from django.db import IntegrityError, connections, router, transaction
from django.db.models import Subquery
from django.utils import timezone

from tiktok_tracking import conf, statements
from tiktok_tracking.adapters import adapter_for, clean_order_id
from tiktok_tracking.boundaries import fit_fields
from tiktok_tracking.charges import apply_charge, charge_suffix
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
from tiktok_tracking.pixels import (
    current_site_id,
    pixels_for_site,
    require_pixels,
    site_scoped,
)
from tiktok_tracking.publisher import publish_deliver_task, publisher
from tiktok_tracking.signals import payment_completed

logger = logging.getLogger(__name__)

# What identifies a browser receipt, as its model's fields.
RECEIPT_KEY = ("pixel_id", "event", "event_id")
# Rows of orders whose id is unusable: never sent, shown in the admin with the reason.
INVALID_EVENT_ID_PREFIX = "invalid_"


def connect():
    payment_completed.connect(
        on_payment_completed, dispatch_uid="tiktok_tracking.on_payment_completed"
    )


def on_payment_completed(sender, order, request=None, event_id_suffix=None, charge=None, **kw):
    """Record the purchase (or the second charge ``charge``); never raise into the shop's code."""
    return record_order_event(
        conf.get("PURCHASE_EVENT"),
        order,
        request=request,
        event_id_suffix=event_id_suffix,
        charge=charge,
    )


def record_order_event(event_name, order, *, request=None, context=None, snapshot=None, **kw):
    """Record one server-lane event of an order, one row per pixel; log, never raise, on failure.

    Returns the TrackedEvent rows (one per pixel the order's site has), empty when nothing
    could be recorded.
    """
    if not conf.get("ENABLED"):
        return []
    try:
        return _record(event_name, order, request=request, context=context, snapshot=snapshot, **kw)
    except Exception:
        # The payment has succeeded; losing the checkout over tracking would be worse than
        # losing the event. The error is logged loudly and the reconcile command finds the gap.
        logger.exception("Could not record the TikTok %s event of an order", event_name)
        return []


def _record(
    event_name, order, *, request, context, snapshot, event_id_suffix=None, charge=None, now=None
):
    from tiktok_tracking.models import TrackedEvent

    now = now or timezone.now()
    adapter = adapter_for(order)
    pixel_ids = _pixel_ids(adapter, request)
    if not pixel_ids:
        return []
    try:
        order_id = clean_order_id(adapter.order_id())
        event_id_suffix = charge_suffix(charge, event_id_suffix)
        event_id = event_id_for(event_name, order_id, event_id_suffix)
    except Exception as exc:
        reason = _unreadable_order(exc, "its id")
        return _record_unidentified(event_name, order, pixel_ids, reason, now)

    build_fields = partial(
        _event_fields,
        adapter,
        event_name=event_name,
        event_id=event_id,
        order_id=order_id,
        request=request,
        context=context,
        snapshot=snapshot,
        suffix=event_id_suffix,
        charge=charge,
        now=now,
    )
    try:
        recorded = _insert_once(pixel_ids, event_name, event_id, build_fields)
    except Exception as exc:
        # Whatever the order holds, a paid order leaves a row: a failed one that names the
        # reason, so the admin and the reconcile command show it and it can be resent once
        # the data is fixed.
        logger.exception("Could not record the TikTok %s event of an order in full", event_name)
        reason = f"Could not record the event: {type(exc).__name__}: {exc}"
        recorded = _insert_once(
            pixel_ids,
            event_name,
            event_id,
            partial(_failed_fields, event_name, event_id, order_id, reason, now),
        )
    new = [
        row.pk for row, created in recorded if created and row.status == TrackedEvent.Status.PENDING
    ]
    if new:
        transaction.on_commit(partial(enqueue_delivery, new), robust=True)
    return [row for row, _created in recorded]


def _pixel_ids(adapter, request):
    """The pixels this order's events go to: all, unless some are limited to certain sites."""
    pixels = require_pixels()
    if not site_scoped(pixels):
        return [pixel.pixel_id for pixel in pixels]
    try:
        site_id = adapter.site_id()
    except InvalidOrderData as exc:
        logger.warning("An order has an invalid site: %s; the request's site is used", exc)
        site_id = None
    if site_id is None:
        site_id = current_site_id(request)
    if site_id is None:
        logger.warning(
            "The site of an order is unknown (no site_id on the order, no request, no SITE_ID): "
            "its events go only to the pixels not limited to SITES"
        )
    return [pixel.pixel_id for pixel in pixels_for_site(pixels, site_id)]


def _insert_once(pixel_ids, event_name, event_id, build_fields):
    """``[(row, created)]``, one per pixel: the rows inserted now, or those already recorded.

    ``build_fields()`` gives the fields the pixels' rows share. One savepoint for all of it:
    should a statement fail, the shop's transaction must go on (on PostgreSQL an error would
    otherwise abort it), and the payment must still commit.
    """
    from tiktok_tracking.models import TrackedEvent

    try:
        with transaction.atomic():
            fields = build_fields()
            return [(_insert_row(pixel_id, fields), True) for pixel_id in pixel_ids]
    except IntegrityError:
        # Already recorded (a second signal for the same payment): the first rows stand.
        existing = {
            row.pixel_id: row
            for row in TrackedEvent.objects.filter(
                pixel_id__in=pixel_ids, event=event_name, event_id=event_id
            )
        }
        missing = [pixel_id for pixel_id in pixel_ids if pixel_id not in existing]
        if missing and len(missing) == len(pixel_ids):
            raise  # not a row recorded before: a real error, for the caller to log
        # A pixel added to the settings since the first signal gets its row now.
        added = dict(
            (row.pixel_id, (row, created))
            for row, created in (
                _insert_once(missing, event_name, event_id, build_fields) if missing else ()
            )
        )
        return [
            (existing[pixel_id], False) if pixel_id in existing else added[pixel_id]
            for pixel_id in pixel_ids
        ]


def _insert_row(pixel_id, fields):
    from tiktok_tracking.models import BrowserReceipt, TrackedEvent

    # Every text cut to its column: on PostgreSQL a value too long would fail the INSERT.
    values = fit_fields(TrackedEvent, {**fields, "pixel_id": pixel_id})
    receipt = (pixel_id, fields["event"], fields["event_id"])
    using = router.db_for_write(TrackedEvent)
    # The thank-you page's receipt may have come first (a webhook often arrives later): read by
    # the INSERT itself, which spares the checkout a round trip.
    if statements.supported(using):
        return statements.insert(
            TrackedEvent,
            values,
            using=using,
            now=fields["event_time"],
            computed={"browser_seen_at": (_receipt_subquery(using), receipt)},
        )
    row = TrackedEvent.objects.create(
        browser_seen_at=Subquery(
            BrowserReceipt.objects.filter(
                pixel_id=pixel_id, event=fields["event"], event_id=fields["event_id"]
            ).values("received_at")[:1]
        ),
        **values,
    )
    # The instance holds the subquery, not its answer: leave the field deferred, so that
    # reading it (rare) loads the stored value.
    del row.browser_seen_at
    return row


@lru_cache(maxsize=8)
def _receipt_subquery(using):
    """The receipt time of one (pixel, event, event_id), as SQL for the INSERT."""
    from tiktok_tracking.models import BrowserReceipt

    quote = connections[using].ops.quote_name
    meta = BrowserReceipt._meta
    columns = {name: quote(meta.get_field(name).column) for name in RECEIPT_KEY}
    return (
        f"(SELECT {quote(meta.get_field('received_at').column)} FROM {quote(meta.db_table)} "  # noqa: S608
        f"WHERE {columns['pixel_id']} = %s AND {columns['event']} = %s "
        f"AND {columns['event_id']} = %s LIMIT 1)"
    )


def _unreadable_order(exc, what):
    """Log why the order (``what`` of it) could not be read; the reason kept on its row."""
    if isinstance(exc, InvalidOrderData):
        logger.warning("An order has invalid tracking data in %s: %s", what, exc)
        return f"Invalid order data: {exc}"
    # The shop's adapter failed: a bug to fix, and a row that says so until it is.
    logger.exception("The order adapter could not read %s", what)
    return f"Could not read the order: {type(exc).__name__}: {exc}"


def _event_fields(
    adapter, *, event_name, event_id, order_id, request, context, snapshot, suffix, charge, now
):
    """Resolve the context and build the payload: the fields every pixel's row shares."""
    from tiktok_tracking.models import TrackedEvent

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
        "event": event_name,
        "event_id": event_id,
        "order_id": order_id,
        "event_time": now,
        "next_attempt_at": now,
        "visitor_id": snapshot.visitor_id,
        "consent_status": snapshot.consent_status or "",
    }
    try:
        facts = read_order(adapter)
        if charge is not None:
            # A second charge reports what it bought, not the order's total again.
            facts = apply_charge(facts, charge)
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
    return fields


def _record_unidentified(event_name, order, pixel_ids, reason, now):
    """Failed rows for an order whose id cannot make an event_id, so the admin shows it."""

    # A saved order keeps its key, so a repeated signal finds the same row; anything else gets
    # a row of its own.
    key = getattr(order, "pk", None)
    if key is None:
        reference = uuid.uuid4().hex[:24]
    else:
        identity = f"{type(order).__module__}.{type(order).__qualname__}:{key!r}"
        reference = sha256_hex(identity)[:24]
    event_id = f"{INVALID_EVENT_ID_PREFIX}{reference}"
    recorded = _insert_once(
        pixel_ids,
        event_name,
        event_id,
        partial(_failed_fields, event_name, event_id, event_id, reason, now),
    )
    return [row for row, _created in recorded]


def _failed_fields(event_name, event_id, order_id, reason, now):
    """The fields of a row that is kept, failed with ``reason``, and never sent as it is."""
    from tiktok_tracking.models import TrackedEvent

    return {
        "event": event_name,
        "event_id": event_id,
        "order_id": order_id,
        "event_time": now,
        "next_attempt_at": now,
        "status": TrackedEvent.Status.FAILED,
        "payload": {},
        "last_error": reason,
    }


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
