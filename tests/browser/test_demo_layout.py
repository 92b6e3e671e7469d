"""The demo's pages as a newcomer sees them, on a desktop and on a phone: what must fit, fits."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from tests.conftest import wait_until
from tests.demo.test_demo_shop import START_TIMEOUT, demo_env, run
from tests.processes import free_port, listening

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TIKTOK_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
SKUS = ["CAP-BLACK", "HOOD-SUN", "MUG-TEAL", "TEE-PINK"]
SHOPPER_EMAIL = "first.last@example.com"
VIEWPORTS = {"desktop": (1280, 800, False), "phone": (390, 844, True)}

# Each product picture's SKU label: its text, whether it is cut, and whether it lies inside
# the picture.
_SKU_LABELS_JS = """
return Array.from(document.querySelectorAll(".picture")).map((picture) => {
    const label = picture.querySelector(".sku");
    if (!label) {
        return {text: null};
    }
    const outer = picture.getBoundingClientRect();
    const inner = label.getBoundingClientRect();
    return {
        text: label.textContent.trim(),
        cut: label.scrollWidth > label.clientWidth || label.scrollHeight > label.clientHeight,
        inside: inner.left >= outer.left && inner.right <= outer.right
            && inner.top >= outer.top && inner.bottom <= outer.bottom,
    };
});
"""

# Every input of the gateway's card that sticks out of the card's content box (into its
# padding, or further), and the card's own edges against the window's.
_GATEWAY_FIT_JS = """
const box = document.querySelector(".box");
const outer = box.getBoundingClientRect();
const style = getComputedStyle(box);
const inset = (side) =>
    parseFloat(style[`padding${side}`]) + parseFloat(style[`border${side}Width`]);
const card = {
    left: outer.left + inset("Left"), right: outer.right - inset("Right"),
    top: outer.top + inset("Top"), bottom: outer.bottom - inset("Bottom"),
};
const fields = box.querySelectorAll("input:not([type=hidden]), button");
const outside = Array.from(fields)
    .map((field) => [field, field.getBoundingClientRect()])
    // Half a pixel for layout's rounding to 1/64 px of padding given in vw.
    .filter(([, rect]) => rect.left < card.left - 0.5 || rect.right > card.right + 0.5
        || rect.top < card.top - 0.5 || rect.bottom > card.bottom + 0.5)
    .map(([field, rect]) => `${field.outerHTML} at ${rect.left}..${rect.right}`);
return {
    inputs: box.querySelectorAll("input:not([type=hidden])").length,
    outside: outside,
    card: [outer.left, outer.right],
    width: document.documentElement.clientWidth,
    scrolls: document.documentElement.scrollWidth > document.documentElement.clientWidth,
};
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The demo's web server alone (no worker is needed to reach the gateway's page)."""
    tmp_path = tmp_path_factory.mktemp("demo-layout")
    port = free_port()
    env = demo_env(tmp_path, DEMO_PORT=str(port), SANDBOX_PORT=str(free_port()))
    for argv in (("migrate", "--noinput", "-v", "0"), ("seed_demo",)):
        result = run(env, "manage.py", *argv)
        assert result.returncode == 0, result.stdout + result.stderr
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: listening(port), timeout=START_TIMEOUT, message="the shop to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def use_viewport(browser, name):
    """Chromium's viewport at ``name``'s size, as a desktop window or as a phone."""
    width, height, mobile = VIEWPORTS[name]
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def decline_tracking(browser, shop):
    """Answer the consent banner, which would otherwise cover the buttons on a phone."""
    browser.get(shop + "/")
    decline = "form.consent-form input[value='denied'] ~ button"
    browser.find_element(By.CSS_SELECTOR, decline).click()
    wait_until(lambda: consent_status(browser) == "denied", message="consent denied")


def consent_status(browser):
    # The page reloads after the click: it may be read mid-way.
    try:
        return browser.find_element(By.ID, "consent-status").text
    except WebDriverException:
        return ""


def shot(browser, name):
    folder = ARTIFACTS / "layout"
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / f"{name}.png"))


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_product_pictures_show_the_whole_sku(browser, shop, viewport):
    use_viewport(browser, viewport)
    decline_tracking(browser, shop)
    shot(browser, f"catalog-{viewport}")
    labels = browser.execute_script(_SKU_LABELS_JS)
    assert sorted(label["text"] for label in labels) == SKUS
    assert [label for label in labels if label["cut"] or not label["inside"]] == []

    browser.get(shop + "/products/CAP-BLACK/")
    shot(browser, f"product-{viewport}")
    [label] = browser.execute_script(_SKU_LABELS_JS)
    assert label == {"text": "CAP-BLACK", "cut": False, "inside": True}


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_gateway_card_holds_its_inputs_and_no_email_as_the_name(browser, shop, viewport):
    use_viewport(browser, viewport)
    decline_tracking(browser, shop)
    browser.get(shop + "/products/HOOD-SUN/")
    browser.find_element(By.CSS_SELECTOR, "form[action='/cart/add/'] button").click()
    wait_until(lambda: browser.current_url.endswith("/cart/"), message="the cart")
    browser.get(shop + "/checkout/")
    browser.find_element(By.NAME, "email").send_keys(SHOPPER_EMAIL)
    browser.find_element(By.CSS_SELECTOR, "form.stack button").click()
    wait_until(lambda: "/gateway/pay/" in browser.current_url, message="the gateway's page")
    shot(browser, f"gateway-{viewport}")

    name = browser.find_element(By.XPATH, "//label[contains(., 'Name on card')]//input")
    assert name.get_attribute("value") == ""
    assert SHOPPER_EMAIL not in browser.page_source
    fit = browser.execute_script(_GATEWAY_FIT_JS)
    assert fit["inputs"] == 2
    assert fit["outside"] == []
    left, right = fit["card"]
    assert left >= 0 and right <= fit["width"], fit
    assert not fit["scrolls"], fit
