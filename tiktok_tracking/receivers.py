"""Connects the app to the shop's ``payment_completed`` signal; recording.py does the work."""

from tiktok_tracking import conf
from tiktok_tracking.recording import record_order_event
from tiktok_tracking.signals import payment_completed


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
