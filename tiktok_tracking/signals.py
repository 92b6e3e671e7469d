"""Signals: the one the shop sends when a payment completes, and the app's own outcome signals."""

from django.dispatch import Signal

# Sent by the shop: payment_completed.send(sender=Order, order=order, request=request_or_None,
# event_id_suffix=None). The suffix distinguishes a second charge on one order (upsell, renewal).
payment_completed = Signal()

# Sent by the app after a delivery attempt has been recorded; receivers get the row ids.
events_delivered = Signal()  # tracked_event_ids
events_failed = Signal()  # tracked_event_ids, permanent (bool)
