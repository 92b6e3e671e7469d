"""The server lane end to end: shop views -> outbox -> real Celery worker -> sandbox over HTTP."""

import hashlib
import socket
import time
from decimal import Decimal
from itertools import pairwise

import pytest
from django.db import transaction
from django.test import Client

from tests.conftest import wait_until
from tests.shop.models import Order, OrderLine
from tiktok_tracking.client import UNKNOWN_ANSWER_MAX_ATTEMPTS
from tiktok_tracking.models import DeliveryAttempt, TrackedEvent
from tiktok_tracking.signals import payment_completed

pytestmark = pytest.mark.integration

Status = TrackedEvent.Status


# The shopper's browser: the same at checkout and on the return from the payment page.
BROWSER = {"HTTP_USER_AGENT": "Mozilla/5.0 (test)", "REMOTE_ADDR": "203.0.113.7"}


def checkout(client, number, **fields):
    data = {"number": number, "email": " Shopper@Example.COM ", "phone": "+1 415 555 0100"}
    data.update(fields)
    client.cookies["_ttp"] = "ttp-cookie-1"
    response = client.post("/checkout/?ttclid=click-123", data, **BROWSER)
    assert response.status_code == 200
    return Order.objects.get(number=number)


def pay(client, number):
    response = client.post(f"/pay/{number}/", **BROWSER)
    assert response.status_code == 200
    return response


def place_paid_order(number):
    client = Client()
    checkout(client, number)
    pay(client, number)


def row_of(number):
    return TrackedEvent.objects.get(order_id=number)


def wait_for_status(number, *statuses, timeout=30):
    return wait_until(
        lambda: TrackedEvent.objects.filter(order_id=number, status__in=statuses).first(),
        timeout=timeout,
        message=f"order {number} to reach {statuses}",
    )


def track_requests(sandbox):
    return [r for r in sandbox.requests if r["path"].endswith("/event/track/")]


def test_paid_order_is_delivered_once_by_a_real_worker(sandbox, start_worker):
    start_worker()
    place_paid_order("1007")

    row = wait_for_status("1007", Status.DELIVERED)
    requests = track_requests(sandbox)
    assert len(requests) == 1
    request = requests[0]
    assert request["access_token_present"] and request["access_token_valid"] is True
    assert request["answer"]["code"] == 0
    item = request["body"]["data"][0]
    assert item["event"] == "Purchase"
    assert item["event_id"] == "order_1007" == row.event_id
    assert isinstance(item["event_time"], int) and item["event_time"] < 10**11
    expected_email = hashlib.sha256(b"shopper@example.com").hexdigest()
    assert item["user"]["email"] == expected_email
    assert item["user"]["phone"] == hashlib.sha256(b"+14155550100").hexdigest()
    # Captured at checkout, sent from the worker long after that request ended.
    assert item["user"]["ttclid"] == "click-123"
    assert item["user"]["ttp"] == "ttp-cookie-1"
    assert item["user"]["ip"] == "203.0.113.7"
    assert item["properties"]["order_id"] == "1007"
    assert item["properties"]["currency"] == "USD"
    assert item["properties"]["value"] == pytest.approx(89.99)
    assert request["body"]["event_source_id"] == "CTESTPIXEL0001"
    assert row.last_request_id == request["request_id"]
    assert row.attempts == 1


def test_rate_limit_then_ok_is_delivered_after_a_retry(sandbox, start_worker):
    start_worker()
    sandbox.program([{"code": 40100, "message": "Too many requests"}])
    place_paid_order("2001")

    row = wait_for_status("2001", Status.DELIVERED)
    assert row.attempts == 2
    outcomes = list(row.delivery_attempts.values_list("answer__outcome", "answer__code"))
    assert outcomes == [("transient", 40100), ("delivered", 0)]
    assert len(track_requests(sandbox)) == 2


def test_parameter_error_fails_without_retry_and_shows_on_the_row(sandbox, start_worker):
    start_worker()
    message = "data.0.properties.contents.0.content_id: Not a valid string."
    sandbox.program([{"code": 40002, "message": message}])
    place_paid_order("2002")

    row = wait_for_status("2002", Status.FAILED, Status.DELIVERED)
    assert row.status == Status.FAILED
    assert row.last_code == 40002
    assert message in row.last_error
    assert row.attempts == 1
    # Give a wrongly scheduled retry the time it would need to show itself.
    time.sleep(2)
    assert len(track_requests(sandbox)) == 1
    assert row_of("2002").status == Status.FAILED


@pytest.mark.parametrize(
    "fault, expected_message",
    [
        ({"status": 503, "body": "Service Unavailable"}, "HTTP 503"),
        ({"delay": 3.0}, "Timed out"),
    ],
    ids=["http-503", "timeout"],
)
def test_server_errors_and_timeouts_back_off_then_deliver(
    sandbox, start_worker, fault, expected_message
):
    start_worker()
    sandbox.program([fault, fault])
    place_paid_order("2003")

    row = wait_for_status("2003", Status.DELIVERED, timeout=40)
    attempts = [attempt.answer for attempt in row.delivery_attempts.select_related("answer")]
    assert [a.outcome for a in attempts] == ["transient", "transient", "delivered"]
    assert expected_message in attempts[0].message or expected_message in (
        f"HTTP {attempts[0].http_status}"
    )
    # Backoff, not a hot loop: each retry waited at least half its base delay.
    gaps = [(b.attempted_at - a.attempted_at).total_seconds() for a, b in pairwise(attempts)]
    assert all(gap >= 0.25 for gap in gaps), gaps


def test_ok_status_with_an_unknown_code_is_never_delivered(sandbox, start_worker):
    start_worker()
    unknown = {"status": 200, "code": 12345, "message": "Unknown failure"}
    sandbox.program([unknown] * UNKNOWN_ANSWER_MAX_ATTEMPTS)
    place_paid_order("2004")

    # Retried, in case it is a new kind of outage, but only so many times.
    row = wait_for_status("2004", Status.FAILED, Status.DELIVERED, timeout=40)
    assert row.status == Status.FAILED
    assert row.attempts == UNKNOWN_ANSWER_MAX_ATTEMPTS
    assert row.last_http_status == 200
    assert row.last_code == 12345
    assert '"message":"Unknown failure"' in row.last_message
    assert row.delivered_at is None
    assert len(track_requests(sandbox)) == UNKNOWN_ANSWER_MAX_ATTEMPTS


def test_tiktok_s_own_errors_in_a_200_are_retried(sandbox, start_worker):
    start_worker()
    sandbox.program([{"code": 50002, "message": "Service unavailable"}])
    place_paid_order("2009")

    row = wait_for_status("2009", Status.DELIVERED, Status.FAILED)
    assert row.status == Status.DELIVERED
    outcomes = list(row.delivery_attempts.values_list("answer__outcome", "answer__code"))
    assert outcomes == [("transient", 50002), ("delivered", 0)]


def test_rolled_back_order_sends_nothing(sandbox, start_worker):
    start_worker()
    order = Order.objects.create(number="2005", email="a@b.example", total=Decimal("10.00"))
    OrderLine.objects.create(order=order, sku="S", name="Mug", quantity=1, price=Decimal("10.00"))

    class PaymentDeclined(Exception):
        pass

    with pytest.raises(PaymentDeclined), transaction.atomic():
        payment_completed.send(sender=Order, order=order, request=None)
        raise PaymentDeclined

    time.sleep(2)
    assert not TrackedEvent.objects.exists()
    assert track_requests(sandbox) == []


def test_signal_sent_three_times_gives_one_row_and_one_delivery(sandbox, start_worker):
    start_worker()
    client = Client()
    checkout(client, "2006")
    for _ in range(3):  # a reload, a webhook retry, a cron that also confirms payments
        pay(client, "2006")
    wait_for_status("2006", Status.DELIVERED)
    time.sleep(1.5)
    assert TrackedEvent.objects.count() == 1
    events = [e for e in sandbox.events() if e["event_id"] == "order_2006"]
    assert len(events) == 1


def test_payment_view_does_not_wait_for_tiktok(sandbox, start_worker, monkeypatch):
    # Slow, but inside TIMEOUT (2 s in the test settings, the whole request).
    sandbox.set_latency(1.5)
    start_worker()
    client = Client()
    checkout(client, "2007")

    sandbox_port = int(sandbox.url.rsplit(":", 1)[1])
    connects = []
    real_connect = socket.socket.connect

    def watching_connect(sock, address):
        if isinstance(address, tuple) and address[1] == sandbox_port:
            connects.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", watching_connect)
    pay(client, "2007")
    monkeypatch.undo()

    assert connects == [], "the payment request talked to the Events API"
    assert row_of("2007").status in (Status.PENDING, Status.SENDING)
    wait_for_status("2007", Status.DELIVERED, timeout=30)


def test_broker_down_at_commit_checkout_succeeds_and_sweeper_delivers(
    sandbox, start_worker, start_beat, broken_broker
):
    client = Client()
    checkout(client, "2008")
    with broken_broker():
        pay(client, "2008")
    assert row_of("2008").status == Status.PENDING
    assert track_requests(sandbox) == []

    start_worker()
    start_beat()  # the sweeper runs every SWEEP_INTERVAL (1 s in the tests)
    row = wait_for_status("2008", Status.DELIVERED, timeout=40)
    assert row.attempts == 1


def test_worker_killed_mid_batch_delivers_everything_after_restart(
    sandbox, start_worker, start_beat
):
    client = Client()
    numbers = [f"30{i:02d}" for i in range(12)]
    for number in numbers:
        checkout(client, number)
    # Paid while no worker runs, so the first worker finds them all due at once: one batch.
    with transaction.atomic():
        for number in numbers:
            payment_completed.send(sender=Order, order=Order.objects.get(number=number))
    sandbox.set_latency(5.0)
    worker = start_worker()
    wait_until(lambda: track_requests(sandbox), timeout=30, message="the batch to reach TikTok")
    worker.kill()
    assert TrackedEvent.objects.filter(status=Status.SENDING).count() == len(numbers)

    sandbox.set_latency(0)
    start_worker()
    start_beat()
    wait_until(
        lambda: TrackedEvent.objects.filter(status=Status.DELIVERED).count() == len(numbers),
        timeout=60,
        message="every event to be delivered after the restart",
    )
    delivered_ids = {e["event_id"] for e in sandbox.events()}
    assert delivered_ids >= {f"order_{n}" for n in numbers}
    assert DeliveryAttempt.objects.filter(answer__outcome="delivered").count() == len(numbers)
