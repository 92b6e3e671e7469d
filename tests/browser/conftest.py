"""Headless Chromium fixtures and page helpers for the browser tests, using Debian's packages."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

BROWSER_DIR = Path(__file__).resolve().parent

# Debian's chromium and chromium-driver packages install here; PATH is the fallback.
CHROMIUM_PATH = "/usr/bin/chromium"
CHROMEDRIVER_PATH = "/usr/bin/chromedriver"
REQUIRE_BROWSER_ENV = "TIKTOK_REQUIRE_BROWSER"
MISSING_REASON = "Chromium/chromedriver not installed (apt-get install chromium chromium-driver)"

# The network here is closed: without the background-networking switches Chromium keeps
# dialling Google's hosts, and sandboxing/GPU/shared memory are unavailable in containers.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WINDOW_SIZE = (1280, 900)
PAGE_LOAD_TIMEOUT = 20

# JSON round trip drops the stub's functions so only plain data crosses the WebDriver wire.
_READ_TTQ_QUEUE_JS = """
const ttq = window.ttq;
if (typeof ttq === "undefined" || ttq === null) {
    return [];
}
const entries = Array.prototype.filter.call(ttq, (entry) => Array.isArray(entry));
return JSON.parse(JSON.stringify(entries));
"""


def _find_executable(default_path: str, name: str) -> str | None:
    if os.path.isfile(default_path) and os.access(default_path, os.X_OK):
        return default_path
    return shutil.which(name)


def find_chromium_paths() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` paths, or ``None`` when either one is missing."""
    chromium = _find_executable(CHROMIUM_PATH, "chromium")
    chromedriver = _find_executable(CHROMEDRIVER_PATH, "chromedriver")
    if chromium and chromedriver:
        return chromium, chromedriver
    return None


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when Chromium and its driver exist."""
    return None if find_chromium_paths() else MISSING_REASON


def browser_required() -> bool:
    """True when a missing browser must fail the run (CI) rather than skip the tests."""
    return os.environ.get(REQUIRE_BROWSER_ENV) == "1"


def skip_or_fail(reason: str) -> None:
    """Skip the test for ``reason``, or fail it when the environment demands a browser."""
    if browser_required():
        pytest.fail(f"{reason} and {REQUIRE_BROWSER_ENV}=1", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    # Hooks of a nested conftest still see every collected item, hence the path check; doing
    # it here rather than with per-module ``pytestmark`` covers test files added later.
    for item in items:
        if Path(item.path).resolve().is_relative_to(BROWSER_DIR):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_paths():
    """``(chromium, chromedriver)``; skips (or fails under TIKTOK_REQUIRE_BROWSER=1) if absent."""
    paths = find_chromium_paths()
    if paths is None:
        skip_or_fail(MISSING_REASON)
    return paths


@pytest.fixture
def browser(chromium_paths, tmp_path, monkeypatch):
    """A fresh headless Chromium WebDriver with its own profile; quit after the test."""
    # Explicit paths already bypass Selenium Manager; offline mode guards against any download.
    monkeypatch.setenv("SE_OFFLINE", "true")
    chromium, chromedriver = chromium_paths

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # mkdtemp keeps the profile path short and distinct from the test's other scratch files.
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size={},{}".format(*WINDOW_SIZE))

    log_path = tmp_path / "chromedriver.log"
    service = Service(executable_path=chromedriver, log_output=str(log_path))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        log_tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
        pytest.fail(f"Chromium did not start: {exc.msg}\nchromedriver log:\n{log_tail}")
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        driver.set_window_size(*WINDOW_SIZE)
        yield driver
    finally:
        driver.quit()


def read_ttq_queue(driver: webdriver.Remote) -> list[list]:
    """The ``[method, *args]`` entries queued on ``window.ttq``; ``[]`` if there is no ttq."""
    return driver.execute_script(_READ_TTQ_QUEUE_JS)


def wait_for_js(
    driver: webdriver.Remote, expression: str, timeout: float = 10, interval: float = 0.05
) -> bool:
    """Poll the JS ``expression`` until it is truthy; fail the test after ``timeout`` seconds."""
    script = f"return Boolean({expression});"
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout}s waiting for JS: {expression}")
        time.sleep(interval)
    return True
