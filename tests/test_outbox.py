"""The outbox in the database: receiver, claims, outcomes, retries, sweeping and purging."""

import json
import os
import socket
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from tests.factories import outbox_rows
from tests.shop.models import Order, OrderLine
from tiktok_tracking import capture_context, delivery, sql, tasks
from tiktok_tracking.adapters import OrderAdapter
from tiktok_tracking.client import DELIVERED, TRANSIENT, Outcome
from tiktok_tracking.models import CheckoutContext, DeliveryAnswer, DeliveryAttempt, TrackedEvent
from tiktok_tracking.signals import payment_completed

Status = TrackedEvent.Status
TOKEN = "test-access-token-0123456789"


def make_order(number, total="89.99", **fields):
    order = Order.objects.create(
        number=number,
        email=fields.pop("email", "shopper@example.com"),
        country=fields.pop("country", "US"),
        total=Decimal(total),
        **fields,
    )
    OrderLine.objects.create(order=order, sku="SKU-1", name="Mug", quantity=1, price=order.total)
    return order


def tracking(**overrides):
    from django.conf import settings

    return override_settings(TIKTOK_TRACKING={**settings.TIKTOK_TRACKING, **overrides})


def pay(order, **kwargs):
    with transaction.atomic():
        payment_completed.send(sender=Order, order=order, **kwargs)


@pytest.mark.django_db
def test_signal_writes_one_row_and_enqueues_after_commit(django_capture_on_commit_callbacks):
    order = make_order("1")
    with django_capture_on_commit_callbacks() as callbacks:
        pay(order)
        pay(order)
    assert TrackedEvent.objects.count() == 1
    assert len(callbacks) == 1
    row = TrackedEvent.objects.get()
    assert (row.event, row.event_id, row.order_id, row.status) == (
        "Purchase",
        "order_1",
        "1",
        Status.PENDING,
    )
    assert row.payload["event_id"] == "order_1"
    assert "shopper@example.com" not in str(row.payload)


@pytest.mark.django_db
def test_suffix_gives_a_second_event_for_a_second_charge():
    order = make_order("2")
    pay(order)
    pay(order, event_id_suffix="upsell_1")
    assert sorted(TrackedEvent.objects.values_list("event_id", flat=True)) == [
        "order_2",
        "order_2_upsell_1",
    ]


@pytest.mark.django_db
def test_purchase_event_name_comes_from_settings():
    with tracking(PURCHASE_EVENT="CompletePayment"):
        pay(make_order("3"))
    row = TrackedEvent.objects.get()
    assert row.event == row.payload["event"] == "CompletePayment"


@pytest.mark.django_db
def test_disabled_server_lane_records_nothing():
    with tracking(ENABLED=False):
        pay(make_order("4"))
    assert not TrackedEvent.objects.exists()


@pytest.mark.django_db
def test_invalid_order_data_is_recorded_as_failed_and_never_breaks_checkout(
    django_capture_on_commit_callbacks,
):
    order = make_order("5", total="-1.00")
    with django_capture_on_commit_callbacks() as callbacks:
        pay(order)
    row = TrackedEvent.objects.get()
    assert row.status == Status.FAILED
    assert "value" in row.last_error
    assert callbacks == []


class BrokenIdAdapter(OrderAdapter):
    """A shop adapter with a bug in reading the id."""

    def order_id(self):
        return self.order.reference  # no such attribute


class BrokenLinesAdapter(OrderAdapter):
    def order_id(self):
        return self.order.number

    def contents(self):
        raise KeyError("sku")


@pytest.mark.django_db
def test_an_order_without_a_usable_id_is_recorded_failed_once_with_the_reason(
    django_capture_on_commit_callbacks,
):
    order = make_order("8")
    broken = tracking(ORDER_ADAPTER="tests.test_outbox.BrokenIdAdapter")
    with broken, django_capture_on_commit_callbacks() as callbacks:
        pay(order)
        pay(order)  # the same saved order: the same row
    row = TrackedEvent.objects.get()
    assert row.status == Status.FAILED
    assert row.event_id.startswith("invalid_") and row.order_id == row.event_id
    assert row.last_error.startswith("Could not read the order: AttributeError")
    assert callbacks == []


@pytest.mark.django_db
def test_an_adapter_that_fails_on_the_lines_leaves_a_failed_row_with_the_reason():
    with tracking(ORDER_ADAPTER="tests.test_outbox.BrokenLinesAdapter"):
        pay(make_order("9"))
    row = TrackedEvent.objects.get()
    assert (row.order_id, row.event_id, row.status) == ("9", "order_9", Status.FAILED)
    assert row.last_error == "Could not read the order: KeyError: 'sku'"


@pytest.mark.django_db
def test_receiver_errors_never_reach_the_shop(caplog):
    with tracking(PIXEL_ID=None):
        pay(make_order("6"))  # does not raise
    assert not TrackedEvent.objects.exists()
    assert "Could not record the TikTok Purchase event" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.django_db
def test_webhook_without_request_sends_the_context_captured_at_checkout():
    order = Order.objects.create(number="7", email="x@example.com", total=Decimal("5.00"))
    request = RequestFactory().post(
        "/checkout/?ttclid=abc",
        HTTP_USER_AGENT="UA/1",
        REMOTE_ADDR="198.51.100.4",
        HTTP_ACCEPT_LANGUAGE="de-DE,de;q=0.9",
    )
    request.COOKIES["_ttp"] = "ttp-1"
    capture_context(request, order)
    pay(order, request=None)  # a webhook: no request at all
    user = TrackedEvent.objects.get().payload["user"]
    assert user["ttclid"] == "abc"
    assert user["ttp"] == "ttp-1"
    assert user["ip"] == "198.51.100.4"
    assert user["user_agent"] == "UA/1"
    assert user["locale"] == "de-DE"
    assert CheckoutContext.objects.count() == 1


def _rows(n, now=None, **fields):
    return outbox_rows(n, now=now, **fields)


@pytest.mark.django_db
def test_claim_takes_due_rows_once_and_counts_the_attempt():
    _rows(5)
    TrackedEvent.objects.filter(event_id="order_4").update(
        next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    claimed = delivery.claim_due_events(10)
    assert len(claimed) == 4
    assert {row.attempts for row in claimed} == {1}
    # In the order they fell due, as claimed: a table without an ORDER BY has no order.
    rows = TrackedEvent.objects.filter(pk__in=[row.pk for row in claimed]).order_by(
        "next_attempt_at", "pk"
    )
    assert {row.status for row in rows} == {Status.SENDING}
    assert {row.claim_token for row in rows} == {claimed[0].claim_token}
    assert all(row.lease_expires_at > timezone.now() for row in rows)
    # The payload comes as the stored JSON text, spliced into the request body unchanged.
    assert [json.loads(row.payload_json) for row in claimed] == [row.payload for row in rows]
    assert delivery.claim_due_events(10) == []


@pytest.mark.django_db
def test_a_claim_names_its_worker_and_time_in_its_one_update():
    _rows(3)
    before = sql.database_now()
    with CaptureQueriesContext(connection) as captured:
        claimed = delivery.claim_due_events(10)
    after = sql.database_now()
    # Written by the UPDATE that claims the rows, not by a statement (or one per row) of its own.
    writes = [q["sql"] for q in captured if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert len(writes) == 1 and "claimed_by" in writes[0] and "claimed_at" in writes[0]
    worker = f"{socket.gethostname()}:{os.getpid()}"
    rows = TrackedEvent.objects.filter(pk__in=[row.pk for row in claimed])
    [(claimed_by, claimed_at)] = {(row.claimed_by, row.claimed_at) for row in rows}
    # One time for the whole claim, the database's, as it ran.
    assert claimed_by == worker and before <= claimed_at <= after
    # Kept once the outcome is recorded: the row's page still says who sent it last.
    delivery.record_outcome(claimed, Outcome(DELIVERED, 200, 0), delivery.DrainReport())
    assert {(row.status, row.claimed_by) for row in rows.all()} == {(Status.DELIVERED, worker)}


@pytest.mark.django_db
def test_a_long_host_name_is_cut_to_the_column_keeping_the_pid(monkeypatch):
    # PostgreSQL enforces the column's length: run there (DATABASE_URL) this would fail uncut.
    monkeypatch.setattr(delivery.socket, "gethostname", lambda: "pod-" + "x" * 300)
    _rows(1)
    [claimed] = delivery.claim_due_events(10)
    claimed_by = TrackedEvent.objects.get(pk=claimed.pk).claimed_by
    limit = TrackedEvent._meta.get_field("claimed_by").max_length
    assert len(claimed_by) == limit
    assert claimed_by.startswith("pod-xxx") and claimed_by.endswith(f":{os.getpid()}")


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_are_disjoint():
    _rows(400)
    results = []
    errors = []

    def worker():
        try:
            mine = []
            while batch := delivery.claim_due_events(25):
                mine.extend(row.pk for row in batch)
            results.append(mine)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    claimed = [pk for mine in results for pk in mine]
    assert len(claimed) == len(set(claimed)) == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(DELIVERED, 200, 0, "OK", "req-1", event_count=3, duration_ms=87),
        # A timeout: no status, no code, no request id.
        Outcome(TRANSIENT, None, None, "Timed out after 2.0s", "", event_count=3, duration_ms=2001),
    ],
)
def test_each_event_gets_its_attempt_with_the_answer(outcome):
    _rows(4)
    claimed = delivery.claim_due_events(3)
    delivery.record_outcome(claimed, outcome, delivery.DrainReport())
    attempts = DeliveryAttempt.objects.order_by("tracked_event_id")
    assert [a.tracked_event_id for a in attempts] == [row.pk for row in claimed]
    # The answer is written once, and every event's attempt names it.
    [answer] = DeliveryAnswer.objects.all()
    assert {a.answer_id for a in attempts} == {answer.pk}
    assert (
        answer.outcome,
        answer.http_status,
        answer.code,
        answer.message,
        answer.request_id,
        answer.batch_size,
        answer.duration_ms,
    ) == (
        outcome.kind,
        outcome.http_status,
        outcome.code,
        outcome.message,
        outcome.request_id,
        3,
        outcome.duration_ms,
    )
    assert abs((timezone.now() - answer.attempted_at).total_seconds()) < 60


@pytest.mark.django_db
def test_drain_sends_batches_per_pixel_over_http(sandbox):
    _rows(25)
    with tracking(BATCH_SIZE=10):
        report = delivery.deliver_due_events()
    assert (report.claimed, report.delivered, report.requests) == (25, 25, 3)
    sizes = [len(r["body"]["data"]) for r in sandbox.requests]
    assert sizes == [10, 10, 5]
    assert TrackedEvent.objects.filter(status=Status.DELIVERED).count() == 25
    assert DeliveryAttempt.objects.filter(answer__outcome="delivered").count() == 25
    row = TrackedEvent.objects.get(event_id="order_0")
    assert row.last_request_id == sandbox.requests[0]["request_id"]


@pytest.mark.django_db
def test_test_event_code_is_sent_when_configured(sandbox):
    _rows(1)
    with tracking(TEST_EVENT_CODE="TEST123"):
        delivery.deliver_due_events()
    assert sandbox.requests[0]["body"]["test_event_code"] == "TEST123"


@pytest.mark.django_db
def test_one_bad_event_does_not_sink_its_batch(sandbox):
    _rows(8)
    sandbox.program([{"code": 40002, "message": "data.3.properties.value: Not a valid number."}])
    report = delivery.deliver_due_events()
    failed = TrackedEvent.objects.get(status=Status.FAILED)
    assert failed.event_id == "order_3"
    assert failed.last_code == 40002
    assert TrackedEvent.objects.filter(status=Status.DELIVERED).count() == 7
    assert report.requests == 2


@pytest.mark.django_db
def test_unlocated_parameter_error_splits_once_and_sends_the_refused_half_again(sandbox):
    _rows(4)
    sandbox.program(
        [
            {"code": 40002, "message": "Invalid batch"},
            {"code": 40002, "message": "Invalid batch"},  # first half: order_0, order_1
            {"code": 0},  # second half: order_2, order_3
        ]
    )
    delivery.deliver_due_events()
    statuses = dict(TrackedEvent.objects.values_list("event_id", "status"))
    # Neither event of the refused half is failed for the other: both are sent again.
    assert statuses == {
        "order_0": Status.PENDING,
        "order_1": Status.PENDING,
        "order_2": Status.DELIVERED,
        "order_3": Status.DELIVERED,
    }
    assert (
        "code 40002, Not narrowed further"
        in TrackedEvent.objects.get(event_id="order_0").last_error
    )

    TrackedEvent.objects.filter(status=Status.PENDING).update(next_attempt_at=timezone.now())
    sandbox.program(
        [
            {"code": 40002, "message": "Invalid batch"},
            {"code": 0},  # order_0
            {"code": 40002, "message": "Invalid event"},  # order_1, alone: the one at fault
        ]
    )
    delivery.deliver_due_events()
    statuses = dict(TrackedEvent.objects.values_list("event_id", "status"))
    assert statuses == {
        "order_0": Status.DELIVERED,
        "order_1": Status.FAILED,
        "order_2": Status.DELIVERED,
        "order_3": Status.DELIVERED,
    }


@pytest.mark.django_db
def test_transient_errors_back_off_in_the_row(sandbox):
    _rows(2)
    sandbox.program([{"status": 503}])
    before = timezone.now()
    report = delivery.deliver_due_events(max_seconds=0)
    assert report.retrying == 2
    for row in TrackedEvent.objects.all():
        assert row.status == Status.PENDING
        assert row.next_attempt_at > before
        assert "HTTP 503" in row.last_error
    assert report.next_retry_in is not None


@pytest.mark.django_db
def test_retries_stop_at_the_retry_window(sandbox):
    _rows(1)
    TrackedEvent.objects.update(
        created_at=timezone.now() - timedelta(hours=23, minutes=59, seconds=59)
    )
    sandbox.program([{"status": 503}])
    with tracking(RETRY_BASE_DELAY=60.0, RETRY_MAX_DELAY=60.0):
        delivery.deliver_due_events()
    row = TrackedEvent.objects.get()
    assert row.status == Status.FAILED
    assert "Retry window" in row.last_error


@pytest.mark.django_db
def test_expired_leases_are_taken_back():
    _rows(3)
    lost = delivery.claim_due_events(10, lease_seconds=60)
    assert delivery.expire_leases() == 0
    # Five seconds past the leases' end, by the database's clock.
    TrackedEvent.objects.update(lease_expires_at=sql.database_now() - timedelta(seconds=5))
    assert delivery.expire_leases() == 3
    assert TrackedEvent.objects.filter(status=Status.PENDING).count() == 3
    assert len(delivery.claim_due_events(10)) == 3
    # A late outcome from the worker that lost its lease does not overwrite the new claim.
    delivery.record_outcome(lost, Outcome(DELIVERED, 200, 0), delivery.DrainReport())
    assert TrackedEvent.objects.filter(status=Status.SENDING).count() == 3


@pytest.mark.django_db
def test_purge_removes_raw_ip_and_user_agent_after_retention():
    _rows(2)
    old = timezone.now() - timedelta(days=8)
    TrackedEvent.objects.update(status=Status.DELIVERED)
    TrackedEvent.objects.filter(event_id="order_0").update(updated_at=old)
    CheckoutContext.objects.create(order_id="0", ip="203.0.113.1", user_agent="UA", captured_at=old)
    assert delivery.purge_personal_data() == 2
    purged = TrackedEvent.objects.get(event_id="order_0")
    assert "ip" not in purged.payload["user"] and "user_agent" not in purged.payload["user"]
    assert purged.payload["user"]["ttclid"] == "c"
    assert "ip" in TrackedEvent.objects.get(event_id="order_1").payload["user"]
    context = CheckoutContext.objects.get()
    assert context.ip is None and context.user_agent == ""


@pytest.mark.django_db
def test_purge_follows_the_configured_retention_and_spares_rows_still_to_send(settings):
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "RETENTION_DAYS": 30}
    _rows(3)
    now = timezone.now()
    TrackedEvent.objects.update(status=Status.FAILED)
    TrackedEvent.objects.filter(event_id="order_0").update(updated_at=now - timedelta(days=31))
    TrackedEvent.objects.filter(event_id="order_1").update(updated_at=now - timedelta(days=8))
    # Still waiting for delivery, however old: TikTok needs its ip and user agent to match.
    TrackedEvent.objects.filter(event_id="order_2").update(
        status=Status.PENDING, updated_at=now - timedelta(days=90)
    )

    tasks.purge_personal_data()

    users = dict(TrackedEvent.objects.values_list("event_id", "payload__user"))
    assert users["order_0"] == {"ttclid": "c"}
    assert users["order_1"]["ip"] == users["order_2"]["ip"] == "203.0.113.1"
    assert users["order_2"]["user_agent"] == "UA"
    purged = TrackedEvent.objects.get(event_id="order_0")
    assert purged.personal_data_purged_at is not None
    # Run again, nothing more to do: purged rows are not rewritten.
    assert delivery.purge_personal_data() == 0


@given(st.integers(min_value=0, max_value=200), st.floats(min_value=0, max_value=1))
def test_retry_delay_is_exponential_capped_and_jittered(attempts, rand):
    delay = delivery.retry_delay(attempts, 30.0, 3600.0, rand=lambda: rand)
    full = min(3600.0, 30.0 * 2 ** max(attempts - 1, 0))
    assert full / 2 <= delay <= full


def test_failing_item_index():
    assert delivery.failing_item_index("data.12.user.email: Not a valid hash") == 12
    assert delivery.failing_item_index("Invalid batch") is None


@pytest.mark.django_db
def test_migrate_creates_the_beat_schedule():
    from django_celery_beat.models import PeriodicTask

    tasks = dict(PeriodicTask.objects.values_list("task", "interval__every"))
    assert tasks["tiktok_tracking.sweep_outbox"] == 1  # SWEEP_INTERVAL in the test settings
    assert "tiktok_tracking.purge_personal_data" in tasks
