"""The background publisher: the checkout asks for a wake-up and never waits for the broker."""

import logging
import os
import threading
from decimal import Decimal

import pytest
from django.test import Client

from tests.shop.models import Order
from tiktok_tracking import publisher as publisher_module
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.publisher import BackgroundPublisher


class BlockingPublish:
    """A publish that waits for ``release`` (a broker that hangs), counting its calls."""

    def __init__(self, fail=False):
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def __call__(self):
        self.started.set()
        assert self.release.wait(20), "the test never released the publish"
        self.calls += 1
        if self.fail:
            raise ConnectionError("broker down")


def test_submit_returns_while_the_publish_hangs_and_waiting_wake_ups_go_out_as_one():
    publish = BlockingPublish()
    publisher = BackgroundPublisher(publish)
    publisher.submit()
    assert publish.started.wait(10)
    # The first publish hangs; these must not wait for it, and go out as one message after it.
    for _ in range(50):
        publisher.submit()
    assert publish.calls == 0
    publish.release.set()
    assert publisher.flush(timeout=10)
    assert publish.calls == 2


def test_after_a_publish_the_wake_ups_of_the_next_interval_go_out_as_one():
    publish = BlockingPublish()
    publish.release.set()
    publisher = BackgroundPublisher(publish, interval=2.0)
    publisher.submit()
    assert publish.started.wait(10)  # a lone wake-up goes out at once
    publisher.submit()
    publisher.submit()
    assert publisher.flush(timeout=10)
    assert publish.calls == 2


def test_a_failed_publish_is_logged_and_the_next_one_still_goes(caplog):
    publish = BlockingPublish(fail=True)
    publish.release.set()
    publisher = BackgroundPublisher(publish)
    with caplog.at_level(logging.WARNING, logger="tiktok_tracking.publisher"):
        publisher.submit()
        assert publisher.flush(timeout=10)
        publish.fail = False
        publisher.submit()
        assert publisher.flush(timeout=10)
    assert publish.calls == 2
    assert "the sweeper will deliver it" in caplog.text


def test_a_broker_down_for_long_costs_one_waiting_wake_up_not_one_per_order():
    publish = BlockingPublish()
    publisher = BackgroundPublisher(publish)
    publisher.submit()
    assert publish.started.wait(10)
    for _ in range(100_000):  # a day of checkouts while the broker hangs
        publisher.submit()
    publish.release.set()
    assert publisher.flush(timeout=10)
    assert publish.calls == 2


def test_flush_reports_a_publish_still_hanging():
    publish = BlockingPublish()
    publisher = BackgroundPublisher(publish)
    publisher.submit()
    assert publish.started.wait(10)
    assert publisher.flush(timeout=0.05) is False
    publish.release.set()
    assert publisher.flush(timeout=10)


def test_flush_with_nothing_asked_returns_at_once():
    assert BackgroundPublisher(BlockingPublish()).flush(timeout=0.01)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_publishes_with_a_thread_of_its_own():
    publish = BlockingPublish()
    publish.release.set()
    publisher = BackgroundPublisher(publish)
    publisher.submit()
    assert publisher.flush(timeout=10)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread did not come along
        try:
            publisher.submit()
            ok = publisher.flush(timeout=10) and publish.calls == 2
            os.write(write_end, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    assert os.read(read_end, 2) == b"ok"
    os.close(read_end)


@pytest.mark.django_db
def test_the_pay_request_returns_while_the_publish_still_hangs(
    monkeypatch, django_capture_on_commit_callbacks
):
    publish = BlockingPublish()
    monkeypatch.setattr(publisher_module, "publisher", BackgroundPublisher(publish))
    order = Order.objects.create(number="P-1", email="a@example.com", total=Decimal("5.00"))
    client = Client()
    client.cookies["country"] = "US"

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/pay/{order.number}/")

    assert response.status_code == 200
    row = TrackedEvent.objects.get(order_id="P-1")
    assert row.status == TrackedEvent.Status.PENDING
    assert publish.started.wait(10)
    assert publish.calls == 0  # the request finished before the broker answered
    publish.release.set()
    assert publisher_module.publisher.flush(timeout=10)
    assert publish.calls == 1


@pytest.mark.django_db
def test_eager_celery_publishes_inline(monkeypatch, settings):
    from tiktok_tracking.tasks import deliver_events

    published = []
    monkeypatch.setattr(publisher_module, "publish_wake_up", lambda: published.append("wake"))
    deliver_events.app.conf.task_always_eager = True
    try:
        publisher_module.enqueue_delivery()
    finally:
        deliver_events.app.conf.task_always_eager = False
    assert published == ["wake"]
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "ENQUEUE_IN_BACKGROUND": False}
    publisher_module.enqueue_delivery()
    assert published == ["wake", "wake"]


def test_the_wake_up_message_carries_no_arguments(monkeypatch):
    from tiktok_tracking.tasks import deliver_events

    sent = []
    monkeypatch.setattr(deliver_events, "apply_async", lambda *a, **kw: sent.append((a, kw)))
    publisher_module.publish_wake_up()
    assert sent == [((), {"retry": False})]
