"""Smoke tests proving the headless Chromium setup: the ttq queue and sendBeacon delivery."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser import conftest as browser_conftest
from tests.browser.conftest import read_ttq_queue, wait_for_js
from tests.conftest import wait_until

# The TikTok base code's stub, trimmed to what queues calls: every method pushes
# [name, ...args] onto the ttq array until events.js loads and replays the queue.
PIXEL_PAGE = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>ttq smoke</title>
<script>
!function (w, d, t) {
  w.TiktokAnalyticsObject = t;
  var ttq = w[t] = w[t] || [];
  ttq.methods = ["page", "track", "identify", "instances", "debug", "on", "off", "once",
                 "ready", "alias", "group", "enableCookie", "disableCookie", "holdConsent",
                 "revokeConsent", "grantConsent"];
  ttq.setAndDefer = function (t, e) {
    t[e] = function () { t.push([e].concat(Array.prototype.slice.call(arguments, 0))); };
  };
  for (var i = 0; i < ttq.methods.length; i++) ttq.setAndDefer(ttq, ttq.methods[i]);
  ttq.page();
  ttq.track("Purchase", {"value": 1.5, "currency": "USD"}, {"event_id": "order_1"});
}(window, document, "ttq");
</script>
<!-- Port 9 (discard) refuses the connection, so the queue is never drained. -->
<script async src="http://127.0.0.1:9/events.js"
        onerror="window.eventsJsFailed = true"></script>
</head>
<body><p>ttq smoke</p></body>
</html>
"""

BLANK_PAGE = "<!doctype html><html><head><title>blank</title></head><body></body></html>"


class RecordingHandler(BaseHTTPRequestHandler):
    """Serves the pages above and records every POST body it receives."""

    pages = {"/pixel.html": PIXEL_PAGE, "/blank.html": BLANK_PAGE}

    def do_GET(self):
        page = self.pages.get(self.path)
        if page is None:
            self.send_error(404)
            return
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.server.posts.append(
            {
                "path": self.path,
                "content_type": self.headers.get("Content-Type", ""),
                "body": self._read_body(),
            }
        )
        self.send_response(204)
        self.end_headers()

    def _read_body(self):
        # Browsers may stream a beacon with chunked encoding instead of a Content-Length.
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args):
        # Keep request lines out of the test output.
        pass


@pytest.fixture
def local_site():
    """A static site on 127.0.0.1 (random port) served from a thread, with recorded POSTs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    server.daemon_threads = True
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, name="local-site", daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_ttq_queue_holds_page_and_purchase(browser, local_site):
    browser.get(f"{local_site.base_url}/pixel.html")
    wait_for_js(browser, "window.eventsJsFailed === true")

    queue = read_ttq_queue(browser)

    assert ["page"] in queue
    assert [
        "track",
        "Purchase",
        {"value": 1.5, "currency": "USD"},
        {"event_id": "order_1"},
    ] in queue


def test_read_ttq_queue_without_ttq(browser, local_site):
    browser.get(f"{local_site.base_url}/blank.html")

    assert read_ttq_queue(browser) == []


def test_send_beacon_delivers_post_body(browser, local_site):
    browser.get(f"{local_site.base_url}/blank.html")
    payload = {"event": "Purchase", "event_id": "order_1"}

    queued = browser.execute_script(
        "return navigator.sendBeacon(arguments[0], arguments[1]);",
        f"{local_site.base_url}/beacon",
        json.dumps(payload),
    )

    assert queued is True
    wait_until(lambda: local_site.posts, timeout=10, message="the beacon POST")
    [post] = local_site.posts
    assert post["path"] == "/beacon"
    assert post["content_type"].startswith("text/plain")
    assert json.loads(post["body"]) == payload


# The skip/fail decision, checked without touching a real browser.


@pytest.fixture
def no_browser_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(browser_conftest, "CHROMIUM_PATH", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(browser_conftest, "CHROMEDRIVER_PATH", str(tmp_path / "no-driver"))
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def _make_executable(path):
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_reason_when_nothing_installed(no_browser_installed):
    assert browser_conftest.find_chromium_paths() is None
    assert browser_conftest.browser_unavailable_reason() == browser_conftest.MISSING_REASON


def test_reason_when_only_chromium_installed(no_browser_installed):
    _make_executable(no_browser_installed / "chromium")

    assert browser_conftest.browser_unavailable_reason() == browser_conftest.MISSING_REASON


def test_found_on_path(no_browser_installed):
    chromium = _make_executable(no_browser_installed / "chromium")
    chromedriver = _make_executable(no_browser_installed / "chromedriver")

    assert browser_conftest.browser_unavailable_reason() is None
    assert browser_conftest.find_chromium_paths() == (chromium, chromedriver)


def test_debian_paths_win_over_path(no_browser_installed, monkeypatch):
    debian = no_browser_installed / "debian"
    debian.mkdir()
    chromium = _make_executable(debian / "chromium")
    chromedriver = _make_executable(debian / "chromedriver")
    _make_executable(no_browser_installed / "chromium")
    _make_executable(no_browser_installed / "chromedriver")
    monkeypatch.setattr(browser_conftest, "CHROMIUM_PATH", chromium)
    monkeypatch.setattr(browser_conftest, "CHROMEDRIVER_PATH", chromedriver)

    assert browser_conftest.find_chromium_paths() == (chromium, chromedriver)


def test_missing_browser_skips_by_default(monkeypatch):
    monkeypatch.delenv("TIKTOK_REQUIRE_BROWSER", raising=False)

    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        browser_conftest.skip_or_fail(browser_conftest.MISSING_REASON)


def test_missing_browser_fails_when_required(monkeypatch):
    monkeypatch.setenv("TIKTOK_REQUIRE_BROWSER", "1")

    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        browser_conftest.skip_or_fail(browser_conftest.MISSING_REASON)


def test_only_exactly_one_requires_the_browser(monkeypatch):
    monkeypatch.setenv("TIKTOK_REQUIRE_BROWSER", "0")

    assert browser_conftest.browser_required() is False


def test_browser_marker_applied(request):
    assert request.node.get_closest_marker("browser") is not None
