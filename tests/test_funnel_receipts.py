"""Receipts of funnel events: every tracked page reports its pixel firing, and the checklist
names the events the server records that no page reported."""

import dataclasses

import pytest
from django.utils import timezone

from tests.test_outbox import make_order
from tests.test_receipts_and_capture import PIXEL, post_receipt, us_client
from tests.test_template_tags import call_arguments, make_request, render
from tiktok_tracking.dashboard.checklist import PASS, WARN, HealthFacts, evaluate_checklist
from tiktok_tracking.dashboard.queries import receipt_event_counts
from tiktok_tracking.events import RANDOM_EVENT_ID_PREFIX
from tiktok_tracking.models import BrowserReceipt, ReceiptTally, TrackedEvent
from tiktok_tracking.receipts import read_receipt_token
from tiktok_tracking.rollups import day_bounds


def tokens(html):
    return [arguments[0] for arguments in call_arguments(html, "window.tiktokTracking.sendReceipt")]


def test_a_funnel_event_sends_a_receipt_for_each_pixel():
    html = render(
        '{% tiktok_pixel %}{% tiktok_track "ViewContent" content_id="SKU-1" %}', make_request("US")
    )
    [token] = tokens(html)
    pixel_id, event, event_id = read_receipt_token(token)
    assert (pixel_id, event) == (PIXEL, "ViewContent")
    assert event_id.startswith(RANDOM_EVENT_ID_PREFIX)


@pytest.mark.django_db
def test_a_funnel_event_of_no_order_is_counted_per_day_not_stored_one_by_one():
    for _ in range(3):
        html = render('{% tiktok_pixel %}{% tiktok_track "ViewContent" %}', make_request("US"))
        [token] = tokens(html)
        assert post_receipt(us_client(), {"token": token}).status_code == 201
    assert not BrowserReceipt.objects.exists()
    tally = ReceiptTally.objects.get()
    assert (tally.day, tally.pixel_id, tally.event, tally.receipts) == (
        timezone.localdate(),
        PIXEL,
        "ViewContent",
        3,
    )
    today = timezone.localdate()
    assert receipt_event_counts(day_bounds(today)[0], today) == {"ViewContent": 3}


@pytest.mark.django_db
def test_an_orders_funnel_event_marks_its_server_row_seen_by_the_browser():
    order = make_order("FR1")
    html = render(
        '{% tiktok_pixel %}{% tiktok_track "InitiateCheckout" order=order %}',
        make_request("US"),
        order=order,
    )
    [token] = tokens(html)
    assert read_receipt_token(token)[2] == "order_FR1_initiatecheckout"
    TrackedEvent.objects.create(
        pixel_id=PIXEL,
        event="InitiateCheckout",
        event_id="order_FR1_initiatecheckout",
        order_id="FR1",
        payload={},
        event_time=timezone.now(),
    )
    assert post_receipt(us_client(), {"token": token}).status_code == 201
    assert TrackedEvent.objects.get().browser_seen_at is not None
    assert BrowserReceipt.objects.get().event == "InitiateCheckout"


def test_the_checklist_names_events_the_server_records_that_no_pixel_reported():
    facts = HealthFacts(
        purchase_event="Purchase",
        receipts=40,
        receipt_names=frozenset({"Purchase", "ViewContent"}),
        server_recorded=80,
        server_event_names=frozenset({"Purchase", "InitiateCheckout"}),
    )

    def pixel_fires(**changes):
        checked = evaluate_checklist(dataclasses.replace(facts, **changes))
        return next(item for item in checked if item.key == "pixel_fires")

    item = pixel_fires()
    assert item.status == WARN
    assert "The server recorded InitiateCheckout but no page's pixel reported it" in item.detail
    assert pixel_fires(receipt_names=facts.receipt_names | {"InitiateCheckout"}).status == PASS
    # A purchase reported under its legacy name is the thank-you page firing all the same.
    legacy = pixel_fires(
        receipt_names=frozenset({"CompletePayment", "InitiateCheckout"}),
    )
    assert legacy.status == PASS
