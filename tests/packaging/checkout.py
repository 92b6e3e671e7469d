"""One checkout in the fresh shop: an order, its thank-you page, then the payment's signal.

Copied into the shop's folder and run there with its virtualenv's python; prints one JSON object.
"""

import json
import os
import sys
from decimal import Decimal

import django


def checkout(number):
    from django.db import transaction
    from django.test import Client
    from orders.models import Order

    from tiktok_tracking.models import TrackedEvent
    from tiktok_tracking.signals import payment_completed

    order = Order.objects.create(
        number=number,
        total=Decimal("49.90"),
        currency="EUR",
        email="buyer@example.com",
        country="US",
    )
    order.lines.create(sku="MUG-1", name="Mug", quantity=2, unit_price=Decimal("24.95"))
    # A whole request through the shop's middleware, URLconf, view and template engine.
    page = Client().get(f"/orders/{number}/thanks/", HTTP_HOST="localhost")
    # As a payment webhook would: the order marked paid and the signal, in one transaction.
    with transaction.atomic():
        Order.objects.filter(pk=order.pk).update(paid=True)
        payment_completed.send(sender=Order, order=order, request=None)
    row = TrackedEvent.objects.get(order_id=number)
    return {
        "page_status": page.status_code,
        "page": page.content.decode(),
        "event": row.event,
        "event_id": row.event_id,
        "status": row.status,
        "last_error": row.last_error,
    }


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    django.setup()
    print(json.dumps(checkout(sys.argv[1])))
