"""The sandbox's events.js in real headless Chromium: queue kept, calls posted, consent honoured."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.conftest import read_ttq_queue, wait_for_js
from tests.conftest import wait_until
from tiktok_tracking.sandbox import SandboxServer
from tiktok_tracking.sandbox.server import PIXEL_SCRIPT_PATH

PIXEL = "CPIX"
PURCHASE = {"value": 42.0, "currency": "EUR", "content_type": "product"}

# TikTok's base code stub as the app's template renders it, with the script URL swapped for
# the sandbox's; {calls} are the page's own ttq calls.
PAGE = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>sandbox pixel</title>
<script>
!function (w, d, t) {{
  w.TiktokAnalyticsObject = t;
  var ttq = w[t] = w[t] || [];
  ttq.methods = ["page", "track", "identify", "instances", "debug", "on", "off", "once",
                 "ready", "alias", "group", "enableCookie", "disableCookie", "holdConsent",
                 "revokeConsent", "grantConsent"];
  ttq.setAndDefer = function (t, e) {{
    t[e] = function () {{ t.push([e].concat(Array.prototype.slice.call(arguments, 0))); }};
  }};
  for (var i = 0; i < ttq.methods.length; i++) ttq.setAndDefer(ttq, ttq.methods[i]);
  ttq.load = function (e, n) {{
    var r = "{script_url}";
    ttq._i = ttq._i || {{}}, ttq._i[e] = [], ttq._i[e]._u = r, ttq._t = ttq._t || {{}},
    ttq._t[e] = +new Date, ttq._o = ttq._o || {{}}, ttq._o[e] = n || {{}};
    n = d.createElement("script");
    n.type = "text/javascript", n.async = !0, n.src = r + "?sdkid=" + e + "&lib=" + t;
    e = d.getElementsByTagName("script")[0];
    e.parentNode.insertBefore(n, e);
  }};
  {calls}
}}(window, document, "ttq");
</script>
</head>
<body><p>sandbox pixel</p></body>
</html>
"""

TRACK_ORDER_9 = (
    'ttq.track("Purchase", {"value": 42.0, "currency": "EUR", "content_type": "product"},'
    ' {event_id: "order_9"});'
)
SCRIPT_RAN = "window.ttq && window.ttq._sandbox"


@pytest.fixture
def sandbox():
    server = SandboxServer(port=0).start()
    yield server
    server.stop()


@pytest.fixture
def shop(sandbox):
    """A page server on its own port: ``shop(calls)`` returns the URL of a page making them."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            page = pages.get(self.path)
            payload = (page or "not found").encode()
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def make(*calls):
        path = f"/page{len(pages)}.html"
        pages[path] = PAGE.format(
            script_url=sandbox.url + PIXEL_SCRIPT_PATH, calls="\n  ".join(calls)
        )
        return f"http://127.0.0.1:{httpd.server_address[1]}{path}"

    yield make
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def recorded(sandbox, event_id):
    return [e for e in sandbox.browser_events() if e["event_id"] == event_id]


def test_pixel_posts_queued_calls_and_keeps_the_queue(browser, sandbox, shop):
    browser.get(shop(f'ttq.load("{PIXEL}", {{}});', "ttq.page();", TRACK_ORDER_9))

    [event] = wait_until(
        lambda: recorded(sandbox, "order_9"), timeout=10, message="the pixel's Purchase"
    )
    assert event["pixel"] == PIXEL
    assert event["event"] == "Purchase"
    assert event["properties"] == PURCHASE
    assert event["page_url"].startswith("http://127.0.0.1:")
    wait_until(sandbox.page_views, timeout=10, message="the pixel's page view")
    assert [view["pixel"] for view in sandbox.page_views()] == [PIXEL]

    assert browser.execute_script("return Array.isArray(window.ttq);")
    queue = read_ttq_queue(browser)
    assert ["track", "Purchase", PURCHASE, {"event_id": "order_9"}] in queue
    assert ["page"] in queue

    # Calls made after the script ran go through the wrapped push and still stay queued.
    browser.execute_script('ttq.track("AddToCart", {}, {event_id: "cart_1"});')
    wait_until(lambda: recorded(sandbox, "cart_1"), timeout=10, message="the later call")
    assert ["track", "AddToCart", {}, {"event_id": "cart_1"}] in read_ttq_queue(browser)
    assert len(recorded(sandbox, "order_9")) == 1


def test_held_calls_wait_for_grant(browser, sandbox, shop):
    browser.get(shop("ttq.holdConsent();", f'ttq.load("{PIXEL}");', "ttq.page();", TRACK_ORDER_9))
    wait_for_js(browser, SCRIPT_RAN)
    # Give a wrongly sent beacon time to arrive before claiming nothing came.
    time.sleep(0.5)
    assert sandbox.browser_events() == []
    assert sandbox.page_views() == []

    browser.execute_script("ttq.grantConsent();")

    wait_until(lambda: recorded(sandbox, "order_9"), timeout=10, message="the held Purchase")
    wait_until(sandbox.page_views, timeout=10, message="the held page view")
    assert ["track", "Purchase", PURCHASE, {"event_id": "order_9"}] in read_ttq_queue(browser)


def test_revoke_drops_held_calls(browser, sandbox, shop):
    browser.get(shop("ttq.holdConsent();", f'ttq.load("{PIXEL}");', TRACK_ORDER_9))
    wait_for_js(browser, SCRIPT_RAN)

    browser.execute_script(
        'ttq.revokeConsent(); ttq.track("Purchase", {}, {event_id: "order_10"});'
        'ttq.grantConsent(); ttq.track("Purchase", {}, {event_id: "order_11"});'
    )

    wait_until(lambda: recorded(sandbox, "order_11"), timeout=10, message="the granted call")
    time.sleep(0.3)
    assert [e["event_id"] for e in sandbox.browser_events()] == ["order_11"]
