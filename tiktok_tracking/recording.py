"""The one write path: an order's event, its consent decision, one outbox row per pixel."""

import logging
import uuid
from dataclasses import dataclass
from functools import partial

from django.db import IntegrityError, transaction
from django.utils import timezone

from tiktok_tracking import conf
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
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.pixels import current_site_id, pixels_for_site, require_pixels, site_scoped
from tiktok_tracking.publisher import enqueue_delivery
from tiktok_tracking.rerecording import passing_database_error, rerecorder
from tiktok_tracking.sql import DatabaseNow, receipt_time

logger = logging.getLogger(__name__)

# Rows of orders whose id is unusable: never sent, shown in the admin with the reason.
INVALID_EVENT_ID_PREFIX = "invalid_"


@dataclass(frozen=True)
class Resolved:
    """The browser context and consent an event is built with, and whether to keep them."""

    context: object
    snapshot: ConsentSnapshot
    # No checkout captured this order, but a request came with its payment: keep its context
    # for the order's later server events (a renewal, an upsell charged by webhook).
    keep: bool = False


def capture_context(request, order):
    """Store the browser context and consent of ``order`` for its later server events.

    Also records the server-lane funnel events (``SERVER_FUNNEL_EVENTS``, InitiateCheckout by
    default) with the same event_id that ``{% tiktok_track ... order=order %}`` renders. Never
    raises into the checkout: what cannot be captured is logged, and the order's purchase is
    still recorded when it is paid. Returns the captured context, or None.
    """
    # Outside the shop's transaction, the context and the funnel events commit together: one
    # commit (a disk flush) on the checkout page rather than one per statement. Inside it, a
    # savepoint: a statement that fails (a lock timeout on PostgreSQL) must not abort the
    # shop's transaction.
    try:
        with transaction.atomic():
            adapter = adapter_for(order)
            context = context_from_request(request)
            snapshot = snapshot_from_request(request, country=_order_country(adapter))
            save_context(clean_order_id(adapter.order_id()), context, snapshot)
            # Each in a savepoint of its own, and never raising.
            for event in conf.get("SERVER_FUNNEL_EVENTS"):
                record_order_event(event, order, context=context, snapshot=snapshot)
    except Exception:
        logger.exception("Could not capture the checkout context of an order")
        return None
    return context


def record_order_event(event_name, order, *, request=None, context=None, snapshot=None, **kw):
    """Record one server-lane event of an order, one row per pixel; log, never raise, on failure.

    ``request`` is the browser request that completed the payment, if any; ``context`` and
    ``snapshot`` the context already known (capture_context passes what it stored). Without
    either, the context the checkout captured is read. Returns the TrackedEvent rows (one per
    pixel the order's site has), empty when nothing could be recorded.
    """
    if not conf.get("ENABLED"):
        return []
    now = kw.pop("now", None) or timezone.now()
    try:
        return _record(
            event_name, order, request=request, context=context, snapshot=snapshot, now=now, **kw
        )
    except Exception as exc:
        if passing_database_error(exc):
            # The payment must commit without its event rather than fail: the event is
            # recorded again once it has, in a transaction of its own.
            logger.warning(
                "Could not record the TikTok %s event of an order (%s): recording it again "
                "once the payment commits",
                event_name,
                type(exc).__name__,
            )
            transaction.on_commit(
                partial(
                    _record_again, event_name, order, request, context, snapshot, now=now, **kw
                ),
                robust=True,
            )
            return []
        # The payment has succeeded; losing the checkout over tracking would be worse than
        # losing the event. The error is logged loudly and the reconcile command finds the gap.
        logger.exception("Could not record the TikTok %s event of an order", event_name)
        return []


def _record_again(event_name, order, request, context, snapshot, **kw):
    """After the payment committed: hand the event to the background re-recorder.

    The request is read now, while it is still the one being answered; the background thread
    gets what it said, not the request.
    """
    fresh = None
    if request is not None and context is None:
        fresh = (context_from_request(request), None)
        try:
            fresh = (fresh[0], snapshot_from_request(request))
        except Exception:
            # Its consent could not be read (the database again): the stored one is used.
            logger.warning("Could not read the consent of a paying visitor", exc_info=True)
    rerecorder.submit(
        partial(
            _record,
            event_name,
            order,
            request=None,
            context=context,
            snapshot=snapshot,
            fresh=fresh,
            **kw,
        ),
        f"the TikTok {event_name} event of an order",
    )


def resolve_context(order_id, request, context=None, snapshot=None, fresh=None):
    """The context an event of ``order_id`` is built with (reads only; pure but for the read).

    A webhook or cron has no browser request: it sends what the checkout captured. A request
    fills the gaps of the stored context (the click id often lives only in the checkout's URL).
    ``fresh`` is ``(context, snapshot or None)`` read from a request earlier, when the event is
    recorded again after its payment.
    """
    if context is not None:
        return Resolved(context, snapshot or ConsentSnapshot())
    stored, stored_snapshot = stored_context(order_id)
    if request is not None:
        fresh = (
            context_from_request(request),
            snapshot_from_request(request, country=stored_snapshot and stored_snapshot.country),
        )
    if fresh is None:
        return Resolved(stored, stored_snapshot or ConsentSnapshot())
    fresh_context, fresh_snapshot = fresh
    return Resolved(
        merge_contexts(fresh_context, stored),
        fresh_snapshot or stored_snapshot or ConsentSnapshot(),
        keep=stored is None,
    )


def _record(
    event_name,
    order,
    *,
    request,
    context,
    snapshot,
    fresh=None,
    event_id_suffix=None,
    charge=None,
    now=None,
):
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

    def build_fields():
        resolved = resolve_context(order_id, request, context, snapshot, fresh)
        if resolved.keep:
            save_context(order_id, resolved.context, resolved.snapshot, exists=False)
        return event_fields(
            adapter,
            event_name=event_name,
            event_id=event_id,
            order_id=order_id,
            resolved=resolved,
            suffix=event_id_suffix,
            charge=charge,
            now=now,
        )

    try:
        recorded = _insert_once(pixel_ids, event_name, event_id, build_fields)
    except Exception as exc:
        if passing_database_error(exc):
            raise  # the database, not the order: recorded again in full after the payment
        # Whatever the order holds, a paid order leaves a row: a failed one that names the
        # reason, so the admin and the reconcile command show it, and recording the order
        # again (the signal sent again, the scan of paid orders) replaces it.
        logger.exception("Could not record the TikTok %s event of an order in full", event_name)
        reason = f"Could not record the event: {type(exc).__name__}: {exc}"
        recorded = _insert_once(
            pixel_ids,
            event_name,
            event_id,
            partial(failed_fields, event_name, event_id, order_id, reason, now),
        )
    if any(created and row.status == TrackedEvent.Status.PENDING for row, created in recorded):
        transaction.on_commit(enqueue_delivery, robust=True)
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
    # An event archived days ago is not looked up here (a query on every payment): recorded
    # again, its twin is dropped by the worker (delivery.drop_archived_twins), never sent.
    try:
        with transaction.atomic():
            return [(row, True) for row in _insert_rows(pixel_ids, build_fields())]
    except IntegrityError:
        # Already recorded (a second signal for the same payment): the first rows stand, but
        # for placeholders of an order that could not be read, rebuilt now. In a savepoint of
        # its own, like the INSERT: a failed statement must not abort the shop's transaction.
        with transaction.atomic():
            existing = _recorded(pixel_ids, event_name, event_id)
            if not existing:
                raise  # not a row recorded before: a real error, for the caller to log
            rebuilt = _replace_placeholders(existing, build_fields)
            return [
                (row, created or row.pixel_id in rebuilt)
                for row, created in _with_the_rest(
                    existing, pixel_ids, event_name, event_id, build_fields
                )
            ]


def is_placeholder(row):
    """Whether ``row`` is a failed row kept without a payload (its order could not be read)."""
    return row.status == TrackedEvent.Status.FAILED and not row.payload


def _replace_placeholders(existing, build_fields):
    """Rebuild the placeholder rows among ``existing`` (``{pixel_id: row}``) in place, once the
    order can be read: the event is then recorded in full, as if the first signal had been.
    Returns the pixel ids of the rows rebuilt."""
    placeholders = [row for row in existing.values() if is_placeholder(row)]
    if not placeholders:
        return set()
    fields = build_fields()
    if not fields.get("payload"):
        return set()  # still unreadable: the row keeps the reason it has
    fields = fit_fields(TrackedEvent, fields)
    reset = {
        "status": TrackedEvent.Status.PENDING,
        "attempts": 0,
        "last_error": "",
        "suppressed_reason": "",
        **fields,
        "next_attempt_at": DatabaseNow(),
    }
    for row in placeholders:
        for name, value in reset.items():
            setattr(row, name, value)
        row.save(update_fields=[*reset, "updated_at"])
        del row.next_attempt_at
    logger.info("Recorded in full %d event row(s) kept without a payload", len(placeholders))
    return {row.pixel_id for row in placeholders}


def _recorded(pixel_ids, event_name, event_id):
    """``{pixel_id: row}`` of the event's rows already in the outbox."""
    rows = TrackedEvent.objects.filter(pixel_id__in=pixel_ids, event=event_name, event_id=event_id)
    return {row.pixel_id: row for row in rows}


def _with_the_rest(existing, pixel_ids, event_name, event_id, build_fields):
    """The ``existing`` rows, and rows inserted now for the pixels that have none (a pixel
    added to the settings since the event was first recorded)."""
    missing = [pixel_id for pixel_id in pixel_ids if pixel_id not in existing]
    added = {
        row.pixel_id: (row, created)
        for row, created in (
            _insert_once(missing, event_name, event_id, build_fields) if missing else ()
        )
    }
    return [
        (existing[pixel_id], False) if pixel_id in existing else added[pixel_id]
        for pixel_id in pixel_ids
    ]


def _insert_rows(pixel_ids, fields):
    """One INSERT for every pixel's row, each reading its browser receipt if one came first."""
    rows = [
        # Every text cut to its column: on PostgreSQL a value too long would fail the INSERT.
        TrackedEvent(
            **{
                **fit_fields(TrackedEvent, {**fields, "pixel_id": pixel_id}),
                # Due at once by the database's clock, which the claims compare with: a web
                # host whose clock runs ahead must not hold its events back.
                "next_attempt_at": DatabaseNow(),
            },
            # The thank-you page's receipt may have come first (a webhook often arrives
            # later): read by the INSERT itself, which spares the checkout a round trip.
            browser_seen_at=receipt_time(pixel_id, fields["event"], fields["event_id"]),
        )
        for pixel_id in pixel_ids
    ]
    TrackedEvent.objects.bulk_create(rows)
    for row in rows:
        # The instance holds the expressions, not their answers: leave the fields deferred,
        # so that reading one (rare) loads the stored value.
        del row.browser_seen_at, row.next_attempt_at
    return rows


def _unreadable_order(exc, what):
    """Log why the order (``what`` of it) could not be read; the reason kept on its row."""
    if isinstance(exc, InvalidOrderData):
        logger.warning("An order has invalid tracking data in %s: %s", what, exc)
        return f"Invalid order data: {exc}"
    # The shop's adapter failed: a bug to fix, and a row that says so until it is.
    logger.exception("The order adapter could not read %s", what)
    return f"Could not read the order: {type(exc).__name__}: {exc}"


def event_fields(adapter, *, event_name, event_id, order_id, resolved, suffix, charge, now):
    """The fields every pixel's row of the event shares: payload, consent decision, status."""
    snapshot = resolved.snapshot
    fields = {
        **_identity_fields(event_name, event_id, order_id, now),
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
        return {
            **fields,
            "status": TrackedEvent.Status.FAILED,
            "payload": {},
            "country": snapshot.country or "",
            "last_error": _unreadable_order(exc, f"order {order_id}"),
        }
    country = facts.country or snapshot.country
    decision = decide(
        policy_from_settings(), lane=SERVER, country=country, status=snapshot.consent_status
    )
    payload = build_event(
        event_name,
        facts,
        event_time=now,
        context=resolved.context,
        event_id_suffix=suffix,
        limited_data_use=decision.limited_data_use or snapshot.limited_data_use,
    )
    fields.update(country=country or "", payload=payload, match_keys=match_key_mask(payload))
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
        partial(failed_fields, event_name, event_id, event_id, reason, now),
    )
    return [row for row, _created in recorded]


def failed_fields(event_name, event_id, order_id, reason, now):
    """The fields of a row that is kept, failed with ``reason``, and never sent as it is."""
    return {
        **_identity_fields(event_name, event_id, order_id, now),
        "status": TrackedEvent.Status.FAILED,
        "payload": {},
        "last_error": reason,
    }


def _identity_fields(event_name, event_id, order_id, now):
    """What every row of an event carries, whatever became of it: which event, when."""
    return {
        "event": event_name,
        "event_id": event_id,
        "order_id": order_id,
        "event_time": now,
        "next_attempt_at": now,
    }


def _order_country(adapter):
    try:
        return adapter.country()
    except ValueError:
        return None
