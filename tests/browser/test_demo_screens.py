"""The admin pages a newcomer reads after one purchase in the demo, checked and photographed.

The screenshots (ARTIFACTS/readme) are the ones README.md and docs/admin.md show.
"""

import pytest
from selenium.webdriver.common.by import By

from tests.browser.test_demo_purchase import (
    ARTIFACTS,
    Steps,
    demo_settings,
    merged_purchase,
    running_demo,
    wait_until,
)

pytestmark = pytest.mark.integration

MERGE = "Both lanes, same id: will merge"


def log_in(browser, demo):
    browser.get(demo["shop"] + "/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(demo["password"])
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(lambda: "/login/" not in browser.current_url, message="the admin login")


def panel_rows(browser):
    """``{event: verdict}`` of the order page's TikTok tracking panel."""
    rows = browser.find_elements(By.CSS_SELECTOR, ".field-tiktok_tracking_panel tbody tr")
    return {
        cells[0].text: cells[3].text
        for cells in (row.find_elements(By.TAG_NAME, "td") for row in rows)
        if cells
    }


def test_the_order_panel_delivery_log_and_dashboard_after_one_purchase(browser, tmp_path):
    browser.set_window_size(1280, 800)
    with running_demo(demo_settings(tmp_path)) as demo:
        steps = Steps(browser, demo, "readme")
        number = steps.buy("DE", "grant")
        wait_until(lambda: merged_purchase(demo, f"order_{number}"), message="both lanes")
        log_in(browser, demo)

        # The order's page: the checkout and the purchase, each sent by both lanes.
        browser.get(f"{demo['shop']}/admin/store/order/?q={number}")
        browser.find_element(By.LINK_TEXT, number).click()

        def both_merge():
            browser.refresh()
            rows = panel_rows(browser)
            return rows if rows.get("InitiateCheckout") == rows.get("Purchase") == MERGE else None

        rows = wait_until(both_merge, message="both events to show the merge")
        assert rows == {"InitiateCheckout": MERGE, "Purchase": MERGE}
        panel = browser.find_element(By.CSS_SELECTOR, ".field-tiktok_tracking_panel")
        browser.execute_script("arguments[0].scrollIntoView()", panel)
        browser.save_screenshot(str(ARTIFACTS / "readme" / "admin-order-panel.png"))

        # The delivery log, as wide as a laptop's screen.
        browser.get(f"{demo['shop']}/admin/tiktok_tracking/trackedevent/")
        assert MERGE in browser.find_element(By.ID, "result_list").text
        browser.save_screenshot(str(ARTIFACTS / "readme" / "admin-delivery-log.png"))

        browser.get(f"{demo['shop']}/admin/tiktok_tracking/trackedevent/dashboard/")
        assert "Orders reconcile" in browser.page_source
        # The whole page: a headless screenshot holds the window only.
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(height + 120, 4000))
        browser.save_screenshot(str(ARTIFACTS / "readme" / "admin-dashboard.png"))
