"""The delivery log in Chromium at 1280 px: the dedup verdict is on screen without scrolling."""

from datetime import timedelta
from pathlib import Path

import django.contrib.admin
import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By

from tests.browser.test_demo_purchase import ARTIFACTS
from tests.browser.test_readiness_table import log_in
from tiktok_tracking.models import TrackedEvent

Status = TrackedEvent.Status
LIST_URL = "/admin/tiktok_tracking/trackedevent/"
WINDOW = (1280, 800)

# An element's box, the viewport's, and the box of the list's scrolling container.
BOXES_JS = """
const box = (element) => {
    const r = element.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, height: r.height};
};
const results = document.querySelector("#changelist .results");
return {
    element: box(arguments[0]),
    results: box(results),
    resultsScrolled: results.scrollLeft,
    pageScrolled: window.scrollX,
    viewport: {width: document.documentElement.clientWidth, height: window.innerHeight},
};
"""

LONG_REASON = (
    "consent denied (DE): the visitor declined in the banner before paying, policy 2026-01"
)


@pytest.fixture
def admin_styles(settings):
    """The admin's own CSS and scripts, which the layout under test is made of.

    The test project does not install staticfiles, so the live server serves STATIC_ROOT:
    pointed at the admin's static folder, it serves them as a deployed shop would.
    """
    settings.STATIC_ROOT = str(Path(django.contrib.admin.__file__).parent / "static")


def shop_rows():
    """A page of what a shop's log holds: both lanes, funnel events, consent, failures, a send."""
    now = timezone.now()
    specs = [
        ("D1001", "Purchase", Status.DELIVERED, now, {}),
        ("D1001", "InitiateCheckout", Status.DELIVERED, None, {}),
        ("D1002", "Purchase", Status.SUPPRESSED, None, {"suppressed_reason": LONG_REASON}),
        ("D1003", "Purchase", Status.FAILED, None, {"last_code": 40002}),
        ("D1004", "Purchase", Status.PENDING, None, {"attempts": 2}),
        ("D1005", "Purchase", Status.SENDING, None, {"claimed_by": "worker-web-7f9c:4242"}),
    ]
    TrackedEvent.objects.bulk_create(
        TrackedEvent(
            pixel_id="CTESTPIXEL0001",
            event=event,
            event_id=f"order_{order}" + ("" if event == "Purchase" else f"_{event.lower()}"),
            order_id=order,
            status=status,
            payload={"event": event},
            event_time=now,
            browser_seen_at=seen,
            consent_status="granted",
            country="DE",
            claimed_at=now - timedelta(seconds=20),
            lease_expires_at=now + timedelta(seconds=100),
            last_request_id="202601051230457F3A9B2C4D5E6F708192",
            last_message="OK" if status == Status.DELIVERED else "",
            **fields,
        )
        for order, event, status, seen, fields in specs
    )


def boxes(browser, element):
    return browser.execute_script(BOXES_JS, element)


def assert_fully_visible(browser, element):
    seen = boxes(browser, element)
    box, view, results = seen["element"], seen["viewport"], seen["results"]
    # Nothing scrolled sideways: what is inside the viewport now is what a reader sees.
    assert seen["pageScrolled"] == 0 and seen["resultsScrolled"] == 0
    assert box["left"] >= 0 and box["right"] <= view["width"], (box, view)
    assert box["top"] >= 0 and box["bottom"] <= view["height"], (box, view)
    # Nor cut off by the list's own scrolling box.
    assert results["left"] <= box["left"] and box["right"] <= results["right"], (box, results)
    return box


def screenshot(browser, name):
    """The window as it is, kept with the other browser tests' artifacts."""
    folder = ARTIFACTS / "admin"
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000


def test_the_verdict_is_on_screen_at_1280_px_with_the_sidebar_and_filters_open(
    browser, live_server, admin_styles
):
    shop_rows()
    browser.set_window_size(*WINDOW)
    log_in(browser, live_server)
    browser.get(live_server.url + LIST_URL)
    assert browser.execute_script("return window.innerWidth") == WINDOW[0]
    # As Django's admin opens: the apps' sidebar on the left, the filters on the right.
    assert browser.find_element(By.ID, "nav-sidebar").is_displayed()
    assert browser.find_element(By.ID, "changelist-filter").is_displayed()
    # Styled: the filters sit beside the list, not under it.
    assert (
        browser.execute_script(
            "return getComputedStyle(document.getElementById('changelist-filter')).flexBasis"
        )
        == "240px"
    )

    header = browser.find_element(By.CSS_SELECTOR, "#result_list th.column-verdict_badge")
    assert header.text.lower() == "dedup verdict"
    assert_fully_visible(browser, header)
    cells = browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-verdict_badge")
    badges = {cell.text: cell.find_element(By.TAG_NAME, "span") for cell in cells}
    # The newest row's badge, as the page opens.
    assert cells[0].text == "Pending"
    assert_fully_visible(browser, badges["Pending"])
    screenshot(browser, "delivery-log-1280.png")
    # Further down the page (scrolled down, never sideways): the longest badge wraps inside the
    # column instead of widening it.
    suppressed = badges[f"Suppressed by consent: {LONG_REASON}"]
    browser.execute_script(
        "window.scrollTo(0, arguments[0].getBoundingClientRect().top - 100)", suppressed
    )
    box = assert_fully_visible(browser, suppressed)
    assert box["height"] > 2 * boxes(browser, badges["Server only"])["element"]["height"]
    assert_fully_visible(browser, badges["Both lanes, same id: will merge"])
    screenshot(browser, "delivery-log-1280-long-verdict.png")
