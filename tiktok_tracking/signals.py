"""Signals: the ones the shop sends (a payment, a refund) and the app's own outcome signals."""

from django.dispatch import Signal

# Sent by the shop: payment_completed.send(sender=Order, order=order, request=request_or_None,
# charge=None, event_id_suffix=None). A charge (tiktok_tracking.charges.upsell/renewal), or the
# older bare suffix, distinguishes a second charge on one order (upsell, renewal).
payment_completed = Signal()

# Sent by the shop when an order is refunded or cancelled: order_refunded.send(sender=Order,
# order=order, amount=None, request=None, refund_id=None). amount is None for the whole order,
# a Decimal for a partial refund; refund_id (the shop's own) tells apart two partial refunds of
# the same amount. TikTok has no refund event: the app records it and sends nothing.
order_refunded = Signal()

# Sent by the app when a market's rule readiness verdict changes between two stored reports:
# market, old, new (ready, caution, not_ready, insufficient_data), reasons (a list of str),
# alert (the ReadinessAlert row). The app's own receiver mails the site admins.
readiness_changed = Signal()

# Sent by the app when the readiness task finds the tracking configuration changed in a way
# that alone can stop or double what TikTok counts (an access token, a pixel id, the test
# event code, the purchase event's name, the consent policy): reasons (a list of str), alert
# (the ReadinessAlert row), recorded_at (when a process first ran with it). The app's own
# receiver mails the site admins.
tracking_config_changed = Signal()

# Sent by the app after a delivery attempt has been recorded; receivers get the row ids.
events_delivered = Signal()  # tracked_event_ids
events_failed = Signal()  # tracked_event_ids, permanent (bool)
