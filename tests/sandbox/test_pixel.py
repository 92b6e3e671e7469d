"""The sandbox's pixel lane over real HTTP: events.js, /sandbox/pixel, the merged view and page."""

import json
import re
import time

import pytest
import requests

from tiktok_tracking.sandbox import SandboxServer
from tiktok_tracking.sandbox.server import (
    BROWSER_ONLY,
    MAX_PIXEL_BODY_BYTES,
    MERGED,
    PIXEL_EVENTS_PATH,
    PIXEL_SCRIPT_PATH,
    SERVER_ONLY,
    TRACK_PATH,
)

PIXEL = "CPIX"
TOKEN = "pixel-test-token"


@pytest.fixture
def sandbox():
    server = SandboxServer(port=0).start()
    yield server
    server.stop()


def pixel_call(event="Purchase", event_id="order_9", pixel=PIXEL, method="track", **extra):
    body = {
        "pixel": pixel,
        "method": method,
        "event": event,
        "properties": {"value": 12.5, "currency": "EUR"},
        "options": {"event_id": event_id} if event_id is not None else {},
        "page_url": "http://shop.test/thanks/9/",
        "sent_at": time.time(),
    }
    body.update(extra)
    return body


def post_pixel(sandbox, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    # What sendBeacon sends for a string body.
    return requests.post(
        sandbox.url + PIXEL_EVENTS_PATH,
        data=raw,
        headers={"Content-Type": "text/plain;charset=UTF-8"},
        timeout=5,
    )


def send_server_event(sandbox, event="Purchase", event_id="order_9", pixel=PIXEL):
    item = {"event": event, "event_time": int(time.time()), "user": {"ip": "203.0.113.1"}}
    if event_id is not None:
        item["event_id"] = event_id
    response = requests.post(
        sandbox.events_url,
        json={"event_source": "web", "event_source_id": pixel, "data": [item]},
        headers={"Access-Token": TOKEN},
        timeout=5,
    )
    assert response.json()["code"] == 0, response.text
    return response.json()["request_id"]


def test_events_js_is_served_with_cors_and_no_caching(sandbox):
    response = requests.get(f"{sandbox.url}{PIXEL_SCRIPT_PATH}?sdkid={PIXEL}&lib=ttq", timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "/sandbox/pixel" in response.text
    # The script only observes the queue the page's base code built.
    assert "ttq.push = function" in response.text


def test_preflight_is_answered_generously(sandbox):
    response = requests.options(
        sandbox.url + PIXEL_EVENTS_PATH,
        headers={
            "Origin": "http://shop.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-anything",
        },
        timeout=5,
    )

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "content-type, x-anything"


def test_pixel_track_call_is_recorded_as_a_browser_event(sandbox):
    response = post_pixel(sandbox, pixel_call())

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    [event] = sandbox.browser_events()
    assert event["pixel"] == PIXEL
    assert event["event"] == "Purchase"
    assert event["event_id"] == "order_9"
    assert event["properties"] == {"value": 12.5, "currency": "EUR"}
    assert event["page_url"] == "http://shop.test/thanks/9/"
    assert event["received_at"] == pytest.approx(time.time(), abs=10)
    assert requests.get(sandbox.url + "/sandbox/browser-events", timeout=5).json() == [event]


def test_page_calls_are_page_views_not_events(sandbox):
    response = post_pixel(sandbox, pixel_call(method="page", event=None, event_id=None))
    assert response.status_code == 204
    assert sandbox.browser_events() == []
    [view] = sandbox.page_views()
    assert view["event"] == "Pageview"
    assert sandbox.merged() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"Purchase"',
        b"NaN",
        json.dumps(pixel_call(pixel="")).encode(),
        json.dumps(pixel_call(pixel=7)).encode(),
        json.dumps(pixel_call(method="identify")).encode(),
        json.dumps(pixel_call(event="")).encode(),
        json.dumps(pixel_call(event=["Purchase"])).encode(),
        json.dumps(pixel_call(properties=[1])).encode(),
        json.dumps(pixel_call(options="order_9")).encode(),
        json.dumps(pixel_call(event_id=891)).encode(),
        json.dumps(pixel_call(page_url={"href": "x"})).encode(),
    ],
)
def test_bad_pixel_calls_are_refused_with_400(sandbox, raw):
    response = post_pixel(sandbox, raw)

    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.json()["ok"] is False
    assert sandbox.browser_events() == []
    # The server is still fine afterwards.
    assert post_pixel(sandbox, pixel_call()).status_code == 204


def test_oversized_pixel_body_is_refused(sandbox):
    padding = "x" * MAX_PIXEL_BODY_BYTES
    response = post_pixel(sandbox, pixel_call(properties={"padding": padding}))

    assert response.status_code == 413
    assert sandbox.browser_events() == []


def test_get_on_pixel_endpoint_is_not_allowed(sandbox):
    response = requests.get(sandbox.url + PIXEL_EVENTS_PATH, timeout=5)

    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_both_lanes_with_the_same_key_merge_into_one(sandbox):
    request_id = send_server_event(sandbox)
    post_pixel(sandbox, pixel_call())
    # A retry of either lane is still the same event for TikTok.
    post_pixel(sandbox, pixel_call())

    [row] = sandbox.merged()
    assert row["pixel"] == PIXEL
    assert row["event"] == "Purchase"
    assert row["event_id"] == "order_9"
    assert row["server_count"] == 1
    assert row["browser_count"] == 2
    assert row["request_ids"] == [request_id]
    assert row["verdict"] == MERGED
    assert row["counted_as"] == 1
    assert row["lanes"] == ["server", "browser"]
    assert row["first_seen"] == row["server_first_seen"] <= row["browser_first_seen"]
    assert requests.get(sandbox.url + "/sandbox/merged", timeout=5).json() == [row]


def test_different_keys_stay_apart(sandbox):
    send_server_event(sandbox, event_id="order_9")
    post_pixel(sandbox, pixel_call(event_id="order_9_upsell_1"))
    # Same id, other event name or other pixel: not the same event either.
    post_pixel(sandbox, pixel_call(event="CompletePayment", event_id="order_9"))
    post_pixel(sandbox, pixel_call(pixel="COTHER", event_id="order_9"))

    rows = sandbox.merged()
    assert [(r["pixel"], r["event"], r["event_id"], r["verdict"]) for r in rows] == [
        (PIXEL, "Purchase", "order_9", SERVER_ONLY),
        (PIXEL, "Purchase", "order_9_upsell_1", BROWSER_ONLY),
        (PIXEL, "CompletePayment", "order_9", BROWSER_ONLY),
        ("COTHER", "Purchase", "order_9", BROWSER_ONLY),
    ]
    assert all(row["counted_as"] == 1 for row in rows)


def test_events_without_event_id_are_never_merged(sandbox):
    send_server_event(sandbox, event_id=None)
    send_server_event(sandbox, event_id=None)
    post_pixel(sandbox, pixel_call(event_id=None))
    post_pixel(sandbox, pixel_call(event_id=""))

    rows = sandbox.merged()
    assert len(rows) == 4
    assert [r["verdict"] for r in rows] == [SERVER_ONLY, SERVER_ONLY, BROWSER_ONLY, BROWSER_ONLY]
    assert all(r["event_id"] is None for r in rows)
    assert all(r["server_count"] + r["browser_count"] == 1 for r in rows)


def test_refused_server_requests_are_not_merged(sandbox):
    sandbox.program([{"code": 40002, "message": "bad"}])
    requests.post(
        sandbox.events_url,
        json={"event_source": "web", "event_source_id": PIXEL, "data": []},
        headers={"Access-Token": TOKEN},
        timeout=5,
    )
    post_pixel(sandbox, pixel_call())

    [row] = sandbox.merged()
    assert row["verdict"] == BROWSER_ONLY


def test_reset_clears_the_browser_lane(sandbox):
    post_pixel(sandbox, pixel_call())
    post_pixel(sandbox, pixel_call(method="page", event=None))
    sandbox.reset()

    assert sandbox.browser_events() == []
    assert sandbox.page_views() == []
    assert sandbox.merged() == []


def test_overview_page_renders_both_lanes(sandbox):
    send_server_event(sandbox, event_id="order_1")
    post_pixel(sandbox, pixel_call(event_id="order_1"))
    post_pixel(sandbox, pixel_call(event_id="order_2"))

    response = requests.get(sandbox.url + "/sandbox/", timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    assert "<title>TikTok sandbox</title>" in page
    assert '<meta http-equiv="refresh" content="3">' in page
    assert MERGED in page and BROWSER_ONLY in page
    # Newest first.
    assert page.index("order_2") < page.index("order_1")
    assert "HTTP" in page and sandbox.requests[0]["request_id"] in page
    assert TOKEN not in page
    # Self-contained: nothing is fetched from elsewhere.
    assert "src=" not in page and "<link" not in page


def test_overview_page_escapes_hostile_values(sandbox):
    hostile = '<script>alert("x")</script>&'
    send_server_event(sandbox, event_id=hostile)
    post_pixel(sandbox, pixel_call(event_id=hostile, pixel="<b>pix</b>"))

    page = requests.get(sandbox.url + "/sandbox/", timeout=5).text

    assert "<script>" not in page
    assert "<b>pix</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page


def test_overview_page_when_empty(sandbox):
    page = requests.get(sandbox.url + "/sandbox/", timeout=5).text

    assert page.count("Nothing received yet.") == 2


def test_track_endpoint_is_untouched_by_the_pixel_lane(sandbox):
    post_pixel(sandbox, pixel_call())

    assert sandbox.requests == []
    assert sandbox.events() == []
    assert requests.get(sandbox.url + TRACK_PATH, timeout=5).status_code == 405


def test_a_store_keeps_both_lanes_across_a_restart_until_clear(tmp_path):
    store = tmp_path / "var" / "sandbox.jsonl"
    with SandboxServer(port=0, store=store) as first:
        send_server_event(first)
        post_pixel(first, pixel_call())
        [before] = first.merged()
        assert before["verdict"] == MERGED
        page = requests.get(first.url + "/sandbox/", timeout=5).text
        assert "Kept across restarts in" in page and ">Clear</button>" in page
    # A crash mid-line leaves half a record: it is skipped, the rest read.
    with open(store, "a") as file:
        file.write('{"kind": "pixel", "rec')
    with SandboxServer(port=0, store=store) as second:
        [after] = second.merged()
        assert after == before
        assert second.requests[0]["request_id"] == before["request_ids"][0]
        # The page's Clear button: a form post, answered with the page again.
        cleared = requests.post(second.url + "/sandbox/clear", timeout=5)
        assert cleared.history[0].status_code == 303
        assert "Nothing received yet." in cleared.text
        assert second.merged() == []
    with SandboxServer(port=0, store=store) as third:
        assert third.merged() == [] and third.requests == []
    assert "pixel-test-token" not in store.read_text()


def test_without_a_store_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SandboxServer(port=0) as sandbox:
        send_server_event(sandbox)
        assert "Kept in memory until the sandbox stops." in sandbox.render_page()
    assert list(tmp_path.iterdir()) == []


def verdict_classes(page):
    """``{event_id: class of its verdict cell}`` from the overview page's merged table."""
    return dict(re.findall(r'<td><code>([^<]*)</code></td>.*?<td class="(v-[^"]*)"', page))


def test_overview_page_warns_only_of_a_purchase_one_lane_sent(sandbox):
    send_server_event(sandbox, event_id="order_1")
    post_pixel(sandbox, pixel_call(event_id="order_1"))
    post_pixel(sandbox, pixel_call(event_id="order_2"))
    send_server_event(sandbox, event="CompletePayment", event_id="order_3")
    # What only the pixel sends, with the pixel's random ids.
    post_pixel(sandbox, pixel_call(event="ViewContent", event_id="a8f3c2d1"))
    post_pixel(sandbox, pixel_call(event="AddToCart", event_id="5e9b0c7f"))
    send_server_event(sandbox, event="Subscribe", event_id="sub_4")

    page = requests.get(sandbox.url + "/sandbox/", timeout=5).text

    assert verdict_classes(page) == {
        "order_1": "v-merged",
        "order_2": "v-warn",
        "order_3": "v-warn",
        "a8f3c2d1": "v-single",
        "5e9b0c7f": "v-single",
        "sub_4": "v-single",
    }
    assert page.count('title="A purchase only one lane sent so far"') == 2
    # The warning colour belongs to the purchases alone.
    assert re.search(r"\.v-warn \{ color: #8a5a00;", page)
    assert not re.search(r"\.v-single \{[^}]*#8a5a00", page)
