"""Both lanes in real headless Chromium: pixel and server send one purchase with one event_id."""

import time

import pytest

from tests.browser.conftest import read_ttq_queue, wait_for_js
from tests.conftest import wait_until
from tiktok_tracking.models import BrowserReceipt, TrackedEvent

Status = TrackedEvent.Status

# Checkout and payment go through the browser's own fetch, so the server lane sees the same
# visitor (cookies, consent) as the pixel.
PLACE_ORDER_JS = """
const [number, done] = [arguments[0], arguments[arguments.length - 1]];
const form = new FormData();
form.append("number", number);
form.append("email", "shopper@example.com");
form.append("country", "DE");
fetch("/checkout/?ttclid=click-e2e", {method: "POST", body: form})
  .then(() => fetch("/pay/" + number + "/", {method: "POST"}))
  .then((response) => done(response.status), (error) => done(String(error)));
"""

CONSENT_JS = """
const [choice, done] = [arguments[0], arguments[arguments.length - 1]];
window.tiktokTracking[choice]().then(() => done("ok"), (error) => done(String(error)));
"""


def open_shop_in_germany(browser, live_server):
    browser.get(live_server.url + "/")
    browser.add_cookie({"name": "country", "value": "DE", "path": "/"})
    browser.get(live_server.url + "/")
    # An opt-in region with no choice yet: the pixel holds everything until a grant.
    assert ["holdConsent"] in read_ttq_queue(browser)


def choose(browser, choice):
    browser.set_script_timeout(10)
    assert browser.execute_async_script(CONSENT_JS, choice) == "ok"


def place_order(browser, number):
    assert browser.execute_async_script(PLACE_ORDER_JS, number) == 200


def drain_until(read, enough, timeout=20):
    """Drain in this process and ``read()`` what was sent until ``enough`` of it, as the periodic
    sweep would: the pixel's receipt updates the row, and a claim that meets the row locked by
    it skips it (SKIP LOCKED) and finds nothing else due. The last reading and the drains'
    reports, once enough or after ``timeout`` seconds."""
    from tiktok_tracking import delivery

    reports, deadline = [], time.monotonic() + timeout
    while True:
        reports.append(delivery.deliver_due_events(max_seconds=5))
        sent = read()
        if enough(sent) or time.monotonic() > deadline:
            return sent, reports
        time.sleep(0.1)


def purchase_calls(queue):
    return [entry for entry in queue if entry[:2] == ["track", "Purchase"]]


def load_the_sandbox_pixel(settings, sandbox):
    """Point the pixel at the sandbox's events.js: a receipt needs the pixel's script running."""
    from tiktok_tracking.sandbox.server import PIXEL_SCRIPT_PATH

    url = sandbox.url + PIXEL_SCRIPT_PATH
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "PIXEL_SCRIPT_URL": url}
    return url


@pytest.mark.django_db(transaction=True)
def test_pixel_and_server_send_the_same_event_id_and_the_receipt_arrives(
    browser, live_server, sandbox, start_worker, settings
):
    load_the_sandbox_pixel(settings, sandbox)
    start_worker()
    open_shop_in_germany(browser, live_server)
    choose(browser, "grant")
    place_order(browser, "E2E-1")

    browser.get(f"{live_server.url}/thanks/E2E-1/")
    wait_for_js(browser, "Array.isArray(window.ttq)")
    calls = purchase_calls(read_ttq_queue(browser))
    assert len(calls) == 1
    _, _, properties, options = calls[0]
    assert options == {"event_id": "order_E2E-1"}

    delivered = wait_until(
        lambda: [e for e in sandbox.events() if e["event"] == "Purchase"],
        timeout=30,
        message="the server lane to deliver the purchase",
    )
    assert [e["event_id"] for e in delivered] == [options["event_id"]]
    server_item = delivered[0]["item"]
    assert properties["value"] == server_item["properties"]["value"]
    assert properties["currency"] == server_item["properties"]["currency"]
    assert properties["contents"] == server_item["properties"]["contents"]
    assert server_item["user"]["ttclid"] == "click-e2e"

    receipt = wait_until(
        lambda: BrowserReceipt.objects.filter(event_id="order_E2E-1").first(),
        timeout=15,
        message="the browser receipt",
    )
    assert receipt.event == "Purchase"
    row = wait_until(
        lambda: TrackedEvent.objects.filter(
            event_id="order_E2E-1", browser_seen_at__isnull=False
        ).first(),
        message="the receipt on the row",
    )
    assert row.status == Status.DELIVERED

    # A reload renders the same id, and a replayed receipt is refused.
    browser.get(f"{live_server.url}/thanks/E2E-1/")
    wait_for_js(browser, "Array.isArray(window.ttq)")
    assert purchase_calls(read_ttq_queue(browser))[0][3] == {"event_id": "order_E2E-1"}
    assert BrowserReceipt.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_with_consent_denied_nothing_is_tracked_in_either_lane(browser, live_server, sandbox):
    open_shop_in_germany(browser, live_server)
    choose(browser, "deny")
    place_order(browser, "E2E-2")

    browser.get(f"{live_server.url}/thanks/E2E-2/")
    assert "TikTok pixel: off" in browser.page_source
    assert [e for e in read_ttq_queue(browser) if e and e[0] == "track"] == []

    row = TrackedEvent.objects.get(event_id="order_E2E-2")
    assert row.status == Status.SUPPRESSED
    assert "denied" in row.suppressed_reason
    assert not BrowserReceipt.objects.exists()
    assert sandbox.events() == []


CONSENT_WITH_SOURCE_JS = """
const [choice, source, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
window.tiktokTracking[choice](source).then(() => done("ok"), (error) => done(String(error)));
"""


@pytest.mark.django_db(transaction=True)
def test_the_js_api_records_who_asked(browser, live_server):
    from tiktok_tracking.models import ConsentRecord

    open_shop_in_germany(browser, live_server)
    browser.set_script_timeout(10)
    assert browser.execute_async_script(CONSENT_WITH_SOURCE_JS, "grant", "cmp") == "ok"
    choose(browser, "deny")
    records = list(ConsentRecord.objects.order_by("created_at", "pk"))
    assert [(record.status, record.source) for record in records] == [
        ("granted", "cmp"),
        ("denied", "banner"),
    ]


@pytest.mark.django_db(transaction=True)
def test_two_pixels_each_get_both_lanes_with_one_event_id(browser, live_server, sandbox, settings):
    from tiktok_tracking.sandbox.server import PIXEL_SCRIPT_PATH

    token = settings.TIKTOK_TRACKING["ACCESS_TOKEN"]
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "PIXEL_ID": None,
        "ACCESS_TOKEN": None,
        "PIXELS": [
            {"PIXEL_ID": "CPIXELONE0001", "ACCESS_TOKEN": token},
            {"PIXEL_ID": "CPIXELTWO0002", "ACCESS_TOKEN": token},
        ],
        # The sandbox's stand-in for events.js, which reports each call for every loaded pixel.
        "PIXEL_SCRIPT_URL": sandbox.url + PIXEL_SCRIPT_PATH,
    }
    open_shop_in_germany(browser, live_server)
    choose(browser, "grant")
    place_order(browser, "E2E-P2")
    browser.get(f"{live_server.url}/thanks/E2E-P2/")

    browser_lane = wait_until(
        lambda: (
            {
                call["pixel"]: call["event_id"]
                for call in sandbox.browser_events()
                if call["event"] == "Purchase"
            }
            if len([c for c in sandbox.browser_events() if c["event"] == "Purchase"]) >= 2
            else None
        ),
        timeout=20,
        message="the pixel's Purchase for both pixels",
    )
    assert browser_lane == {"CPIXELONE0001": "order_E2E-P2", "CPIXELTWO0002": "order_E2E-P2"}

    server_lane, reports = drain_until(
        lambda: {
            event["pixel"]: event["event_id"]
            for event in sandbox.events()
            if event["event"] == "Purchase"
        },
        lambda sent: len(sent) >= 2,
    )
    # Should the server lane come up short, the rows say who held them and what they last heard.
    assert server_lane == browser_lane, (
        reports,
        list(
            TrackedEvent.objects.values_list(
                "pixel_id",
                "event",
                "status",
                "claimed_by",
                "attempts",
                "consent_status",
                "next_attempt_at",
                "last_error",
            )
        ),
        [request["answer"] for request in sandbox.requests],
    )
    # Each pixel's row learned that the browser sent its event.
    wait_until(
        lambda: (
            TrackedEvent.objects.filter(
                event_id="order_E2E-P2", browser_seen_at__isnull=False
            ).count()
            == 2
        ),
        timeout=20,
        message="a receipt for each pixel's row",
    )
