"""The demo end to end in headless Chromium: web, worker, beat and sandbox as real processes."""

import json
import os
import re
import signal
import time
import urllib.request
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import read_ttq_queue
from tests.conftest import wait_until as shared_wait_until
from tests.demo.test_demo_shop import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    WORKER_READY,
    Supervisor,
    demo_env,
    free_port,
    listening,
    started_pid,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TIKTOK_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))


# Slower polling than the suite's default: each admin check also saves a screenshot.
wait_until = partial(shared_wait_until, timeout=30, interval=0.25)


@contextmanager
def running_demo(env):
    """``python -m demo_shop.run`` up and listening; stopped with Ctrl-C, which must end it
    cleanly. Yields the URLs, the admin password and the supervisor."""
    supervisor = Supervisor(env)
    shop_port, sandbox_port = int(env["DEMO_PORT"]), int(env["SANDBOX_PORT"])
    try:
        assert supervisor.wait_for_line(WORKER_READY), "".join(supervisor.output)
        wait_until(
            lambda: listening(shop_port) and listening(sandbox_port),
            timeout=START_TIMEOUT,
            message="the demo to listen",
        )
        output = "".join(supervisor.output)
        password = re.search(r"username admin password (\S+)", output).group(1)
        yield {
            "shop": f"http://127.0.0.1:{shop_port}",
            "sandbox": f"http://127.0.0.1:{sandbox_port}",
            "password": password,
            "supervisor": supervisor,
        }
        supervisor.process.send_signal(signal.SIGINT)
        assert supervisor.process.wait(timeout=STOP_TIMEOUT) == 0, "".join(supervisor.output)
    finally:
        supervisor.stop()


def demo_settings(tmp_path):
    return demo_env(
        tmp_path,
        DEMO_PORT=str(free_port()),
        SANDBOX_PORT=str(free_port()),
        GATEWAY_WEBHOOK_COUNTDOWN="1",
    )


@pytest.fixture
def demo(tmp_path):
    with running_demo(demo_settings(tmp_path)) as running:
        yield running


def sandbox_json(demo, path):
    with urllib.request.urlopen(demo["sandbox"] + path, timeout=5) as response:  # noqa: S310
        return json.load(response)


class Steps:
    """Clicks through the shop, saving a screenshot after every step."""

    def __init__(self, browser, demo, name):
        self.browser, self.demo = browser, demo
        self.folder = ARTIFACTS / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def shot(self, label):
        self.count += 1
        self.browser.save_screenshot(str(self.folder / f"{self.count:02d}-{label}.png"))

    def text_of(self, element_id):
        # The page reloads after some clicks: an element may go stale while it is read.
        try:
            return self.browser.find_element(By.ID, element_id).text
        except WebDriverException:
            return ""

    def click(self, css):
        self.browser.find_element(By.CSS_SELECTOR, css).click()

    def buy(self, country, consent):
        browser = self.browser
        browser.get(self.demo["shop"] + "/")
        self.click(f".switch button[value='{country}']")
        self.shot(f"country-{country}")
        status = "granted" if consent == "grant" else "denied"
        self.click(f"form.consent-form input[value='{status}'] ~ button")
        wait_until(lambda: status in self.text_of("consent-status"), message=f"consent {status}")
        self.shot(f"consent-{status}")
        browser.find_element(By.CSS_SELECTOR, "a[href^='/products/']").click()
        self.shot("product")
        self.click("form[action='/cart/add/'] button")
        self.shot("cart")
        browser.get(self.demo["shop"] + "/checkout/")
        browser.find_element(By.NAME, "email").send_keys("shopper@example.com")
        browser.find_element(By.NAME, "phone").send_keys("+49 30 1234567")
        Select(
            browser.find_element(By.CSS_SELECTOR, "form.stack select[name=country]")
        ).select_by_value(country)
        self.shot("checkout")
        self.click("form.stack button")
        wait_until(lambda: "/gateway/pay/" in browser.current_url, message="the gateway")
        self.shot("gateway")
        self.click("form button[type='submit']")
        wait_until(lambda: "/thanks/" in browser.current_url, message="the thank-you page")
        self.shot("thanks")
        return browser.current_url.rstrip("/").rsplit("/", 1)[1]

    def admin_verdict(self, event_id):
        browser = self.browser
        browser.get(self.demo["shop"] + "/admin/login/")
        if browser.find_elements(By.NAME, "username"):
            browser.find_element(By.NAME, "username").send_keys("admin")
            browser.find_element(By.NAME, "password").send_keys(self.demo["password"])
            self.click("input[type=submit]")
            wait_until(lambda: "/login/" not in browser.current_url, message="the admin login")
        browser.get(f"{self.demo['shop']}/admin/tiktok_tracking/trackedevent/?q={event_id}")
        self.shot("admin")
        return self.text_of("result_list")  # no table until the webhook has recorded the row


def server_events(demo, event_id):
    return [e for e in sandbox_json(demo, "/sandbox/events") if e["event_id"] == event_id]


def test_purchase_reaches_tiktok_once_through_both_lanes(browser, demo):
    steps = Steps(browser, demo, "granted")
    number = steps.buy("DE", "grant")
    event_id = f"order_{number}"

    purchases = [e for e in read_ttq_queue(browser) if e[:2] == ["track", "Purchase"]]
    assert [call[3] for call in purchases] == [{"event_id": event_id}]

    # The gateway's webhook arrives a moment later; the worker then delivers.
    sent = wait_until(lambda: server_events(demo, event_id), message="the server Purchase")
    assert len(sent) == 1 and sent[0]["event"] == "Purchase"

    def merged_row():
        rows = [r for r in sandbox_json(demo, "/sandbox/merged") if r["event_id"] == event_id]
        return rows if rows and rows[0]["browser_count"] and rows[0]["server_count"] else None

    merged = wait_until(merged_row, message="both lanes in the sandbox")
    assert merged[0]["counted_as"] == 1
    assert wait_until(
        lambda: "Both lanes, same id: will merge" in steps.admin_verdict(event_id),
        message="the admin to show the merge",
    )

    # A reload renders the same id; nothing new reaches the server lane.
    browser.get(f"{demo['shop']}/thanks/{number}/")
    steps.shot("thanks-reloaded")
    reloaded = [e for e in read_ttq_queue(browser) if e[:2] == ["track", "Purchase"]]
    assert [call[3] for call in reloaded] == [{"event_id": event_id}]
    time.sleep(3)
    assert len(server_events(demo, event_id)) == 1
    rows = [r for r in sandbox_json(demo, "/sandbox/merged") if r["event_id"] == event_id]
    assert rows[0]["server_count"] == 1 and rows[0]["counted_as"] == 1


def test_denied_consent_in_the_eu_tracks_nothing(browser, demo):
    steps = Steps(browser, demo, "denied")
    number = steps.buy("FR", "deny")
    event_id = f"order_{number}"

    assert "TikTok pixel: off" in browser.page_source
    assert [e for e in read_ttq_queue(browser) if e and e[0] == "track"] == []
    assert wait_until(
        lambda: "Suppressed" in steps.admin_verdict(event_id),
        message="the admin to show the suppression",
    )
    assert server_events(demo, event_id) == []
    browser_events = sandbox_json(demo, "/sandbox/browser-events")
    assert [e for e in browser_events if e.get("event_id") == event_id] == []


def merged_purchase(demo, event_id):
    """The sandbox's row for the purchase once both lanes are in it, else None."""
    rows = [r for r in sandbox_json(demo, "/sandbox/merged") if r["event_id"] == event_id]
    return rows[0] if rows and rows[0]["browser_count"] and rows[0]["server_count"] else None


def test_a_killed_worker_comes_back_and_the_sandbox_remembers_after_a_restart(browser, tmp_path):
    """Pay while the worker is dead: the demo starts it again, the webhook and the server
    Purchase go through, and after `make demo` is stopped and started again the sandbox still
    shows the browser purchase merged with the server's."""
    env = demo_settings(tmp_path)
    with running_demo(env) as demo:
        steps = Steps(browser, demo, "worker-killed")
        supervisor = demo["supervisor"]
        os.kill(started_pid(supervisor.output, "worker"), signal.SIGKILL)
        number = steps.buy("DE", "grant")
        event_id = f"order_{number}"
        output = "".join(supervisor.output)
        assert "worker exited with code -9" in output, output
        wait_until(
            lambda: started_pid(supervisor.output, "worker", after=1),
            message="the demo to start the worker again",
        )
        merged = wait_until(
            lambda: merged_purchase(demo, event_id), message="both lanes in the sandbox"
        )
        assert merged["counted_as"] == 1 and merged["server_count"] == 1
        browser.get(demo["sandbox"] + "/sandbox/")
        steps.shot("sandbox-before-restart")

    with running_demo(env) as demo:
        assert merged_purchase(demo, event_id) == merged
        browser.get(demo["sandbox"] + "/sandbox/")
        steps.shot("sandbox-after-restart")
        row = browser.find_element(By.XPATH, f"//tr[td/code[text()='{event_id}']]").text
        assert "server + browser" in row and "merged" in row, row
