"""The shop's side of an upgrade, run by the previous release's code against its own database.

``python previous_release.py fill N A`` writes N delivered outbox rows and A logged attempts
of them, copies of a purchase the release's own signal handler recorded and its own worker
delivered; ``pay PREFIX OUT STOP`` pays orders one by one, as
the release's web process would during the upgrade, writing one JSON line per payment to OUT
(its number, how long it took, the error it raised; every fourth is partly refunded too),
until the file STOP exists.

It imports only what the test shop and the app have had since their first release, so that
any earlier release can run it. The database and broker come from the test settings'
environment (``TIKTOK_TEST_DB_NAME``, ``DATABASE_URL``, ``CELERY_BROKER_URL``).
"""

import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

# A pause between two payments: some 20 a second, a busy shop's pace.
PAY_INTERVAL = 0.05
# Every so many orders is partly refunded too, where the release records refunds.
REFUND_EVERY = 4


def setup():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def paid_order(number):
    """An order of the test shop, paid in its own transaction with the payment signal."""
    from django.db import transaction

    from tests.shop.models import Order, OrderLine
    from tiktok_tracking.signals import payment_completed

    with transaction.atomic():
        order = Order.objects.create(
            number=number,
            email=f"buyer-{number}@example.com",
            country="US",
            currency="USD",
            total=Decimal("42.50"),
        )
        OrderLine.objects.create(
            order=order, sku="SKU-9", name="Mug", quantity=1, price=order.total
        )
    with transaction.atomic():
        Order.objects.filter(pk=order.pk).update(paid=True)
        payment_completed.send(sender=Order, order=order)
    return order


def refunded(order, refund_id):
    """Refund part of ``order`` through the release's signal; whether the refund was recorded
    (True where the release records no refunds). The app logs, never raises, a failure."""
    try:
        from tiktok_tracking.signals import order_refunded
    except ImportError:
        return True
    from tests.shop.models import Order

    answers = order_refunded.send(
        sender=Order, order=order, amount=Decimal("10.00"), refund_id=refund_id
    )
    return any(answer is not None for _receiver, answer in answers)


def fill(count, attempts):
    """``count`` delivered rows in the outbox and ``attempts`` in the attempt log (one each for
    the first of them), copied in one statement each from a real purchase the release's own
    worker delivered."""
    from django.db import connection

    from tiktok_tracking.models import DeliveryAttempt, TrackedEvent

    paid_order("TEMPLATE")
    template = TrackedEvent.objects.get(order_id="TEMPLATE")
    deadline = time.monotonic() + 60
    while not DeliveryAttempt.objects.filter(tracked_event_id=template.pk).exists():
        if time.monotonic() > deadline:
            sys.exit("the template purchase was never delivered")
        time.sleep(0.1)
    copy_rows(
        TrackedEvent,
        {
            "event_id": "'bulk_' || g",
            "order_id": "'B' || g",
            "status": f"'{TrackedEvent.Status.DELIVERED.value}'",
        },
        f"FROM {{table}} t, generate_series(1, {int(count)}) g WHERE t.id = {template.pk}",
    )
    events = connection.ops.quote_name(TrackedEvent._meta.db_table)
    copies = TrackedEvent.objects.filter(order_id__startswith="B").order_by("pk")
    first = copies.values_list("pk", flat=True).first() or 0
    copy_rows(
        DeliveryAttempt,
        {"tracked_event": "e.id"},
        f"FROM {{table}} t JOIN {events} e ON e.id BETWEEN {first} AND {first + int(attempts) - 1} "
        f"WHERE t.tracked_event_id = {template.pk}",
    )


def copy_rows(model, varied, source):
    """``INSERT INTO <model> SELECT`` its every column from ``t`` (``source``, a FROM clause
    naming ``{table}``), but for the ``varied`` fields' expressions; then ANALYZE."""
    from django.db import connection

    quote = connection.ops.quote_name
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(quote(field.column) for field in fields)
    values = ", ".join(varied.get(field.name, f"t.{quote(field.column)}") for field in fields)
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {values} " + source.format(table=table)
        )
        cursor.execute(f"ANALYZE {table}")


def pay(prefix, out_path, stop_path):
    """Pay orders until ``stop_path`` exists, one JSON line per payment to ``out_path``."""
    from django.db import connection

    stop = Path(stop_path)
    with open(out_path, "a", buffering=1) as out:
        number = 0
        while not stop.exists():
            started = time.monotonic()
            error = None
            try:
                order = paid_order(f"{prefix}{number:05d}")
                if number % REFUND_EVERY == 0 and not refunded(order, f"R{number}"):
                    error = "the refund was not recorded"
            except Exception as exc:  # the figure the test judges
                error = f"{type(exc).__name__}: {exc}"[:300]
                connection.close()
            out.write(
                json.dumps(
                    {
                        "number": f"{prefix}{number:05d}",
                        "at": time.time(),
                        "seconds": round(time.monotonic() - started, 4),
                        "error": error,
                    }
                )
                + "\n"
            )
            number += 1
            time.sleep(PAY_INTERVAL)


if __name__ == "__main__":
    setup()
    command, *arguments = sys.argv[1:]
    if command == "fill":
        fill(int(arguments[0]), int(arguments[1]))
    elif command == "pay":
        pay(*arguments)
    else:
        sys.exit(f"unknown command {command!r}")
