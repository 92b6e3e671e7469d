"""A pixel whose script never loads sends no receipt: the admin shows "Server only", not a merge."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.browser.conftest import read_ttq_queue, wait_for_js
from tests.browser.test_purchase_lanes import (
    choose,
    drain_until,
    load_the_sandbox_pixel,
    open_shop_in_germany,
    place_order,
)
from tests.conftest import wait_until
from tiktok_tracking.dedup import MERGED, SERVER_ONLY, dedup_verdict
from tiktok_tracking.models import BrowserReceipt, TrackedEvent
from tiktok_tracking.sandbox.server import PIXEL_SCRIPT_PATH

# What an ad blocker's filter list matches: TikTok's script path, wherever it is served from.
BLOCKED_PIXEL_SCRIPT = "*" + PIXEL_SCRIPT_PATH + "*"
# Longer than a loaded pixel takes to call back (milliseconds here), so a missing call is an
# answer rather than impatience.
READY_WAIT_MS = 3000
LIST_URL = "/admin/tiktok_tracking/trackedevent/"
RESULT_LIST = re.compile(r'<table id="result_list">(.*?)</table>', re.DOTALL)

# A probe of its own, queued after everything the page queued: it runs only if the pixel's
# script runs ready callbacks, which is what the page's receipts wait for.
READY_PROBE_JS = """
const [waitMs, done] = [arguments[0], arguments[arguments.length - 1]];
const timer = setTimeout(() => done(false), waitMs);
window.ttq.ready(() => { clearTimeout(timer); done(true); });
"""

# The script element's own verdict on the URL, so the negative case knows the block held.
SCRIPT_LOADS_JS = """
const [src, done] = [arguments[0], arguments[arguments.length - 1]];
const script = document.createElement("script");
script.onload = () => done("loaded");
script.onerror = () => done("failed");
script.src = src + "?sdkid=probe&lib=ttq";
document.head.appendChild(script);
"""


@pytest.fixture
def pixel_script_url(settings, sandbox):
    """The sandbox's events.js: it runs ready callbacks as TikTok's script does."""
    return load_the_sandbox_pixel(settings, sandbox)


def block_pixel_script(browser):
    # An ad blocker, a CSP or a network error all leave the page the same way: the script
    # request fails and window.ttq stays the base code's queue.
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": [BLOCKED_PIXEL_SCRIPT]})


def buy_and_render_the_thank_you_page(browser, live_server, number):
    open_shop_in_germany(browser, live_server)
    choose(browser, "grant")
    place_order(browser, number)
    browser.get(f"{live_server.url}/thanks/{number}/")
    wait_for_js(browser, "window.tiktokTracking && window.tiktokTracking.state.allowed")


def deliver_server_lane(sandbox, event_id):
    sent, _reports = drain_until(
        lambda: [e["event"] for e in sandbox.events() if e["event_id"] == event_id], bool
    )
    assert sent == ["Purchase"]
    return TrackedEvent.objects.get(event_id=event_id)


def pixel_runs_ready_callbacks(browser):
    browser.set_script_timeout(READY_WAIT_MS / 1000 + 5)
    return browser.execute_async_script(READY_PROBE_JS, READY_WAIT_MS)


def purchase_then_ready(queue, event_id):
    """True when the queue holds the purchase and, after it, a ready entry for its receipt."""
    methods = [entry[0] for entry in queue]
    purchases = [
        index
        for index, entry in enumerate(queue)
        if entry[:2] == ["track", "Purchase"] and entry[3] == {"event_id": event_id}
    ]
    return len(purchases) == 1 and "ready" in methods[purchases[0] + 1 :]


def admin_verdict(event_id):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    html = client.get(LIST_URL, {"q": event_id}).content.decode()
    # The filter sidebar names every verdict; only the result table says this row's.
    [rows] = RESULT_LIST.findall(html)
    return rows


@pytest.mark.django_db(transaction=True)
def test_blocked_pixel_script_sends_no_receipt_and_the_verdict_is_server_only(
    browser, live_server, sandbox, pixel_script_url
):
    block_pixel_script(browser)
    buy_and_render_the_thank_you_page(browser, live_server, "BLK-1")
    assert browser.execute_async_script(SCRIPT_LOADS_JS, pixel_script_url) == "failed"

    row = deliver_server_lane(sandbox, "order_BLK-1")
    assert row.status == TrackedEvent.Status.DELIVERED
    # The page queued the purchase and its receipt's ready callback; nothing ever read them.
    assert not pixel_runs_ready_callbacks(browser)
    queue = read_ttq_queue(browser)
    assert purchase_then_ready(queue, "order_BLK-1")

    assert not BrowserReceipt.objects.exists()
    row.refresh_from_db()
    assert row.browser_seen_at is None
    assert dedup_verdict(row.status, row.browser_seen_at is not None) == SERVER_ONLY
    verdict = admin_verdict("order_BLK-1")
    assert ">Server only</span>" in verdict
    assert "will merge" not in verdict
    state = browser.execute_script("return window.tiktokTracking.state;")
    assert state["pixelReady"] is False
    assert browser.execute_script("return window.tiktokTracking.pendingReceipts;") == []
    assert sandbox.browser_events() == []


@pytest.mark.django_db(transaction=True)
def test_loaded_pixel_script_sends_the_receipt_and_the_verdict_is_merged(
    browser, live_server, sandbox, pixel_script_url
):
    buy_and_render_the_thank_you_page(browser, live_server, "BLK-2")

    row = deliver_server_lane(sandbox, "order_BLK-2")
    assert pixel_runs_ready_callbacks(browser)
    assert purchase_then_ready(read_ttq_queue(browser), "order_BLK-2")
    assert browser.execute_script("return window.tiktokTracking.state.pixelReady;") is True

    receipt = wait_until(
        lambda: BrowserReceipt.objects.filter(event_id="order_BLK-2").first(),
        timeout=15,
        message="the browser receipt",
    )
    assert receipt.event == "Purchase"
    row.refresh_from_db()
    assert row.browser_seen_at is not None
    assert dedup_verdict(row.status, True) == MERGED
    assert ">Both lanes, same id: will merge</span>" in admin_verdict("order_BLK-2")
    pixel_lane = [e for e in sandbox.browser_events() if e["event"] == "Purchase"]
    assert [e["event_id"] for e in pixel_lane] == ["order_BLK-2"]


@pytest.mark.django_db(transaction=True)
def test_a_ready_pixel_still_holds_the_receipt_until_the_visitor_grants(
    browser, live_server, sandbox, pixel_script_url
):
    open_shop_in_germany(browser, live_server)
    place_order(browser, "BLK-3")
    browser.get(f"{live_server.url}/thanks/BLK-3/")
    wait_for_js(browser, "window.tiktokTracking && window.tiktokTracking.state.pixelReady")
    # The receipt's own ready callback runs after the one above; give it its turn.
    assert pixel_runs_ready_callbacks(browser)

    assert browser.execute_script("return window.tiktokTracking.pendingReceipts.length;") == 1
    assert not BrowserReceipt.objects.exists()

    choose(browser, "grant")
    wait_until(
        lambda: BrowserReceipt.objects.filter(event_id="order_BLK-3").exists(),
        timeout=15,
        message="the receipt released by the grant",
    )
