"""The gateway's webhook while another connection holds the demo database's write lock.

Run by tests/demo as ``python -m tests.demo.locked_webhook`` with the demo's settings, on a
migrated and seeded database; prints what it saw as one JSON line.
"""

import json
import sqlite3

import django

# Short: the lock is held until this process lets go, a longer wait only slows the test.
BUSY_TIMEOUT_SECONDS = 0.2


def main():
    django.setup()
    from django.db import connection
    from django.test import Client

    from demo_shop.store.models import Order, OrderLine, Product
    from demo_shop.store.tasks import SIGNATURE_HEADER, sign, webhook_body

    # Read when the connection opens, which none has done yet.
    connection.settings_dict["OPTIONS"]["timeout"] = BUSY_TIMEOUT_SECONDS
    product = Product.objects.first()
    order = Order.create_numbered(
        email="shopper@example.com", country="DE", currency=product.currency, total=product.price
    )
    OrderLine.objects.create(
        order=order, product=product, sku=product.sku, name=product.name, price=product.price
    )
    body = webhook_body(order.number)
    headers = {SIGNATURE_HEADER: sign(body)}
    # The demo's ALLOWED_HOSTS, not the test client's "testserver".
    client = Client(HTTP_HOST="127.0.0.1")

    # Another process writing, as the worker or beat does: it holds the write lock.
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        locked = client.post(
            "/gateway/webhook/", data=body, content_type="application/json", headers=headers
        )
        paid_while_locked = Order.objects.get(pk=order.pk).is_paid
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The gateway's retry, once the lock is gone.
    retried = client.post(
        "/gateway/webhook/", data=body, content_type="application/json", headers=headers
    )
    print(
        json.dumps(
            {
                "locked_status": locked.status_code,
                "locked_retry_after": locked.get("Retry-After"),
                "paid_while_locked": paid_while_locked,
                "retried_status": retried.status_code,
                "paid": Order.objects.get(pk=order.pk).is_paid,
            }
        )
    )


if __name__ == "__main__":
    main()
