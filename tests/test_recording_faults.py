"""A passing database error on the outbox INSERT costs no paid order its event (PostgreSQL).

Each cause found from outside is played on a real PostgreSQL: a lock timeout and a statement
timeout behind a lock on the outbox (what ``VACUUM FULL`` or a migration takes), a
serialization failure, and a connection that breaks mid-INSERT. Each time the payment commits
and answers, and the purchase is recorded after it, with what the checkout captured.
"""

import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.db.backends.signals import connection_created
from django.utils import timezone

from tests.conftest import skip_unless_required
from tests.shop.models import Order, OrderLine
from tiktok_tracking import conf
from tiktok_tracking.healing import record_missing_purchases
from tiktok_tracking.models import CheckoutContext, TrackedEvent
from tiktok_tracking.rerecording import rerecorder
from tiktok_tracking.signals import payment_completed

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

OUTBOX = TrackedEvent._meta.db_table
TTCLID = "E.C.P.recording-fault-click-id"
# Long enough that a try while the lock is held fails, short enough for a test.
LOCK_WAIT = "300ms"


@pytest.fixture(autouse=True)
def postgresql():
    if connection.vendor != "postgresql":
        skip_unless_required(
            "needs PostgreSQL (DATABASE_URL=postgres://...): lock and statement timeouts, "
            "serialization failures and a killed backend are PostgreSQL's"
        )
    yield
    # Nothing this test left waiting may reach the next one.
    assert rerecorder.flush(timeout=30)


@pytest.fixture
def every_connection():
    """``apply(sql)``: run ``sql`` on this connection and on each one opened from now on (the
    re-recorder's thread opens its own)."""
    statements = []

    def on_connect(sender, connection, **kwargs):
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)

    def apply(sql):
        statements.append(sql)
        with connection.cursor() as cursor:
            cursor.execute(sql)

    connection_created.connect(on_connect)
    yield apply
    connection_created.disconnect(on_connect)
    with connection.cursor() as cursor:
        cursor.execute("RESET ALL")
    # Connections the re-recorder opened keep their settings until closed.
    assert rerecorder.flush(timeout=30)


@contextmanager
def outbox_locked(mode):
    """Hold ``LOCK TABLE <outbox> IN <mode> MODE`` from another connection until the block
    ends."""
    held, release, failed = threading.Event(), threading.Event(), []

    def hold():
        try:
            with transaction.atomic(), connections["default"].cursor() as cursor:
                cursor.execute(f"LOCK TABLE {OUTBOX} IN {mode} MODE")
                held.set()
                release.wait(60)
        except Exception as exc:  # reported to the test below
            failed.append(exc)
            held.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    assert not failed, failed
    try:
        yield
    finally:
        release.set()
        thread.join(10)


def checkout(client, number):
    response = client.post(
        f"/checkout/?ttclid={TTCLID}",
        {"number": number, "email": "jane@example.com", "country": "US"},
        HTTP_USER_AGENT="Mozilla/5.0 (recording faults)",
        REMOTE_ADDR="198.51.100.7",
    )
    assert response.status_code == 200
    assert CheckoutContext.objects.filter(order_id=number).exists()


def purchases(number):
    return list(TrackedEvent.objects.filter(order_id=number, event=conf.get("PURCHASE_EVENT")))


def assert_recorded_in_full(number, paid_between):
    """The order's purchase is pending, with the context the checkout captured and the time of
    its payment, not of its recording."""
    [row] = purchases(number)
    assert row.status == TrackedEvent.Status.PENDING
    assert row.payload["event_id"] == f"order_{number}"
    assert row.payload["user"]["ttclid"] == TTCLID
    assert row.payload["user"]["user_agent"] == "Mozilla/5.0 (recording faults)"
    earliest, latest = paid_between
    assert int(earliest.timestamp()) <= row.payload["event_time"] <= int(latest.timestamp()) + 1


def pay_while_the_outbox_is_locked(client, number, mode):
    """Pay ``number`` through the shop's payment view while the outbox is locked; the payment
    answers and commits, the purchase waits. Returns the period of the payment."""
    with outbox_locked(mode):
        before = timezone.now()
        response = client.post(f"/pay/{number}/")
        after = timezone.now()
        assert response.status_code == 200, response.content
        assert Order.objects.get(number=number).paid
        time.sleep(1.0)  # tried and refused again while the lock is held
        assert rerecorder.waiting() == 1
    return before, after


def test_a_lock_timeout_on_the_outbox_insert_loses_no_purchase(client, every_connection):
    checkout(client, "LT1")
    every_connection(f"SET lock_timeout = '{LOCK_WAIT}'")
    paid_between = pay_while_the_outbox_is_locked(client, "LT1", "SHARE")
    assert rerecorder.flush(timeout=30)
    assert_recorded_in_full("LT1", paid_between)


def test_a_statement_timeout_on_the_outbox_insert_loses_no_purchase(client, every_connection):
    checkout(client, "ST1")
    every_connection(f"SET statement_timeout = '{LOCK_WAIT}'")
    # What VACUUM FULL, CLUSTER or a migration's ALTER TABLE take: reads wait too.
    paid_between = pay_while_the_outbox_is_locked(client, "ST1", "ACCESS EXCLUSIVE")
    assert rerecorder.flush(timeout=30)
    assert_recorded_in_full("ST1", paid_between)


@contextmanager
def outbox_insert_trigger(name, body):
    """A BEFORE INSERT trigger on the outbox running ``body`` (PL/pgSQL), dropped after."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body} RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {OUTBOX} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    try:
        yield
    finally:
        connections.close_all()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {OUTBOX}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")
            cursor.execute(f"DROP SEQUENCE IF EXISTS {name}_tries")


def test_a_serialization_failure_on_the_outbox_insert_loses_no_purchase(client):
    checkout(client, "SF1")
    # The first three INSERTs fail as a serializable transaction's conflict would.
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE fail_serialization_tries")
    body = (
        "IF nextval('fail_serialization_tries') <= 3 THEN "
        "RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure'; "
        "END IF;"
    )
    with outbox_insert_trigger("fail_serialization", body):
        before = timezone.now()
        response = client.post("/pay/SF1/")
        after = timezone.now()
        assert response.status_code == 200, response.content
        assert Order.objects.get(number="SF1").paid
        assert rerecorder.flush(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("SELECT last_value FROM fail_serialization_tries")
            [tries] = cursor.fetchone()
    assert tries >= 4  # the payment's try, two refused after it, the one that took
    assert_recorded_in_full("SF1", (before, after))


def paid_order(number):
    order = Order.objects.create(
        number=number, email="jane@example.com", country="US", total="20.00"
    )
    OrderLine.objects.create(order=order, sku="SKU-1", name="Mug", quantity=1, price=order.total)
    return order


def test_a_connection_broken_mid_insert_loses_no_purchase():
    # A payment webhook in autocommit: the order is saved paid, then the signal sent; the
    # database connection dies under the outbox INSERT (a failover, a killed backend).
    order = paid_order("BC1")
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE kill_backend_tries")
    body = (
        "IF nextval('kill_backend_tries') = 1 THEN "
        "PERFORM pg_terminate_backend(pg_backend_pid()); END IF;"
    )
    with outbox_insert_trigger("kill_backend", body):
        order.paid = True
        order.save(update_fields=["paid"])
        before = timezone.now()
        payment_completed.send(sender=Order, order=order)
        after = timezone.now()
        # The web process closes a broken connection at the end of its request.
        connection.close()
        assert Order.objects.get(number="BC1").paid
        assert rerecorder.flush(timeout=30)
    [row] = purchases("BC1")
    assert row.status == TrackedEvent.Status.PENDING
    assert int(before.timestamp()) <= row.payload["event_time"] <= int(after.timestamp()) + 1


def test_a_purchase_the_process_never_recorded_again_is_recorded_by_the_scan(client, settings):
    # The web process died between the failed INSERT and its second try: nothing waits in
    # memory any more; only the shop's paid orders know.
    checkout(client, "PD1")
    order = Order.objects.get(number="PD1")
    Order.objects.filter(pk=order.pk).update(
        paid=True, created_at=timezone.now() - timedelta(minutes=30)
    )
    assert purchases("PD1") == []
    report = record_missing_purchases()
    assert (report.recorded, report.unrecorded) == (1, 0)
    [row] = purchases("PD1")
    assert row.status == TrackedEvent.Status.PENDING
    assert row.payload["event_id"] == "order_PD1"
    assert row.payload["user"]["ttclid"] == TTCLID
    assert record_missing_purchases().recorded == 0
