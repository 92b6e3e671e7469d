"""Orders with many lines behind a proxy's body limit: each purchase delivered once, none failed."""

import json
from decimal import Decimal

from tests.faults.conftest import finish, needs_services
from tests.shop.models import OrderLine

pytestmark = needs_services

ORDERS = 120
# About 80 bytes of contents each: some 8 KB an event, a megabyte for the orders together.
LINES = 100
PROXY_LIMIT = 192 * 1024


def paid_orders_with_many_lines(book):
    """Paid before any worker runs, so that the first claim takes them all in one batch."""
    orders = book.create(ORDERS)
    OrderLine.objects.bulk_create(
        OrderLine(order=order, sku=f"SKU-{n:05d}", name="Spoon", quantity=1, price=Decimal("0.01"))
        for order in orders
        for n in range(LINES - 1)
    )
    book.pay(orders, threads=2)


def track_requests(sandbox):
    return [request for request in sandbox.requests if request["path"].endswith("/track/")]


def test_a_proxy_413_on_large_batches_is_narrowed_and_every_order_delivered_once(
    sandbox, cluster, book
):
    # The shop raised the cap above what its proxy accepts: requests are refused and halved.
    sandbox.set_body_limit(PROXY_LIMIT)
    paid_orders_with_many_lines(book)
    cluster.worker(TIKTOK_TEST_TRACKING=json.dumps({"MAX_REQUEST_BYTES": 1024 * 1024}))
    # The sweeper, as in production: it wakes the worker should a wake-up be lost.
    cluster.beat()
    figures = finish("413 from a proxy, narrowed", book, sandbox)
    requests = track_requests(sandbox)
    refused = [request for request in requests if request["answer"]["status"] == 413]
    accepted = [request for request in requests if request["answer"]["status"] == 200]
    figures["refused_413"] = len(refused)
    assert refused, "no request went over the proxy's limit: the scenario proved nothing"
    assert max(request["raw_body_size"] for request in accepted) <= PROXY_LIMIT
    assert not book.rows().filter(last_error__contains="even alone").exists()


def test_the_default_cap_keeps_large_batches_under_a_proxy_of_nginx_default(sandbox, cluster, book):
    from tiktok_tracking import conf

    # nginx's default client_max_body_size: the default cap never meets it.
    sandbox.set_body_limit(1024 * 1024)
    paid_orders_with_many_lines(book)
    cluster.worker()
    cluster.beat()
    finish("many lines, default cap", book, sandbox)
    requests = track_requests(sandbox)
    assert len(requests) >= 2
    assert all(request["answer"]["status"] == 200 for request in requests)
    assert max(request["raw_body_size"] for request in requests) <= conf.get("MAX_REQUEST_BYTES")
