"""Connects the app's receivers to the shop's signals and to its own; others do the work."""

from tiktok_tracking import conf
from tiktok_tracking.readiness.alerts import mail_config_change, mail_site_admins
from tiktok_tracking.recording import record_order_event
from tiktok_tracking.refunds import record_refund
from tiktok_tracking.signals import (
    order_refunded,
    payment_completed,
    readiness_changed,
    tracking_config_changed,
)


def connect():
    payment_completed.connect(
        on_payment_completed, dispatch_uid="tiktok_tracking.on_payment_completed"
    )
    order_refunded.connect(on_order_refunded, dispatch_uid="tiktok_tracking.on_order_refunded")
    readiness_changed.connect(
        mail_site_admins, dispatch_uid="tiktok_tracking.mail_readiness_change"
    )
    tracking_config_changed.connect(
        mail_config_change, dispatch_uid="tiktok_tracking.mail_config_change"
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


def on_order_refunded(sender, order, amount=None, request=None, refund_id=None, **kw):
    """Record the refund against the order's purchase; never raise into the shop's code."""
    return record_refund(order, amount=amount, refund_id=refund_id)
