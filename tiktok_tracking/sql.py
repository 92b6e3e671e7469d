"""The checkout's two hand-written statements, each kept for the time a benchmark shows it saves.

Everything else goes through the ORM's query builder. These two run on every payment, and
composing them through it costs more than running them; here they are written once per
database, with the model's own quoted names, through the ORM's public ``RawSQL`` and
``raw()``. Measured per payment on this project's 2-core machine (``python -m bench.checkout
--profile``; ``bench/README.md``), on a database that answers in microseconds:

- the receipt subquery of the outbox INSERT: 305 µs as ``RawSQL`` against 623 µs as a
  ``Subquery`` of a QuerySet (the INSERT alone: 250 µs);
- the read of the order's checkout context: 86 µs with ``raw()`` against 280-314 µs with
  ``values()``/``values_list()``.
"""

from functools import lru_cache

from django.db import connections, router
from django.db.models import DateTimeField
from django.db.models.expressions import RawSQL

# What identifies a browser receipt, as its model's fields.
RECEIPT_KEY = ("pixel_id", "event", "event_id")


@lru_cache(maxsize=8)
def _receipt_sql(alias):
    from tiktok_tracking.models import BrowserReceipt

    quote = connections[alias].ops.quote_name
    meta = BrowserReceipt._meta
    where = " AND ".join(f"{quote(meta.get_field(name).column)} = %s" for name in RECEIPT_KEY)
    # Only the model's own quoted names are formatted in; the values are parameters.
    return (
        f"(SELECT {quote(meta.get_field('received_at').column)} "  # noqa: S608
        f"FROM {quote(meta.db_table)} WHERE {where} LIMIT 1)"
    )


def receipt_time(pixel_id, event, event_id):
    """The time the browser's receipt of this event arrived, as an expression the INSERT reads
    (NULL when none has)."""
    from tiktok_tracking.models import TrackedEvent

    alias = router.db_for_write(TrackedEvent)
    # The SQL holds only quoted model names; the values go as parameters.
    return RawSQL(_receipt_sql(alias), (pixel_id, event, event_id), output_field=DateTimeField())  # noqa: S611


@lru_cache(maxsize=8)
def _context_sql(alias, names):
    from tiktok_tracking.models import CheckoutContext

    quote = connections[alias].ops.quote_name
    meta = CheckoutContext._meta
    columns = ", ".join(quote(meta.get_field(name).column) for name in ("id", *names))
    order_id = quote(meta.get_field("order_id").column)
    return f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {order_id} = %s LIMIT 1"  # noqa: S608


def checkout_context(order_id, names):
    """The CheckoutContext of ``order_id`` with only the fields ``names`` loaded, or None."""
    from tiktok_tracking.models import CheckoutContext

    alias = router.db_for_read(CheckoutContext)
    rows = CheckoutContext.objects.using(alias).raw(_context_sql(alias, tuple(names)), [order_id])
    return next(iter(rows), None)
