"""The Events API client: answer classification (pure) and real HTTP against the sandbox."""

import json

import pytest
import requests

from tiktok_tracking.client import (
    DELIVERED,
    PERMANENT,
    TRANSIENT,
    EventsApiClient,
    Outcome,
    classify_response,
)
from tiktok_tracking.exceptions import PermanentApiError, TransientApiError


def envelope(code, message="", request_id="req-1"):
    return json.dumps({"code": code, "message": message, "request_id": request_id, "data": {}})


@pytest.mark.parametrize(
    "status, body, kind, code",
    [
        (200, envelope(0, "OK"), DELIVERED, 0),
        (200, envelope(40001, "No permission"), PERMANENT, 40001),
        (200, envelope(40002, "data.0.event_id: Not a valid string."), PERMANENT, 40002),
        (200, envelope(40100, "Too many requests"), TRANSIENT, 40100),
        (200, envelope(51234, "Something new"), PERMANENT, 51234),
        (200, "<html>proxy error</html>", TRANSIENT, None),
        (200, json.dumps({"message": "no code"}), TRANSIENT, None),
        (200, json.dumps({"code": "0"}), TRANSIENT, None),
        (500, envelope(0), TRANSIENT, None),
        (503, "Service Unavailable", TRANSIENT, None),
        (429, "slow down", TRANSIENT, None),
        (400, envelope(40002, "bad"), PERMANENT, 40002),
        (401, "unauthorized", PERMANENT, None),
    ],
)
def test_classify_response(status, body, kind, code):
    outcome = classify_response(status, body.encode())
    assert outcome.kind == kind
    assert outcome.code == code
    assert outcome.http_status == status


def test_a_200_with_a_non_zero_code_is_never_delivered():
    for code in (1, 40001, 40002, 40100, 50000, -1):
        assert not classify_response(200, envelope(code).encode()).delivered


def test_request_id_and_message_are_kept():
    outcome = classify_response(200, envelope(40002, "data.3.user.email: bad", "abc123").encode())
    assert outcome.request_id == "abc123"
    assert outcome.message == "data.3.user.email: bad"


def test_unreadable_bodies_are_truncated_for_the_admin():
    outcome = classify_response(200, b"x" * 10_000)
    assert len(outcome.message) < 2100


def test_outcome_raises_the_matching_error_without_the_token():
    with pytest.raises(TransientApiError):
        Outcome(TRANSIENT, 503).raise_for_error()
    with pytest.raises(PermanentApiError) as info:
        Outcome(PERMANENT, 200, 40001, "No permission", "r1", 3).raise_for_error()
    assert "40001" in str(info.value) and "r1" in str(info.value)
    Outcome(DELIVERED, 200, 0).raise_for_error()


def body_for(pixel="CTESTPIXEL0001", event_id="order_1"):
    import time

    return {
        "event_source": "web",
        "event_source_id": pixel,
        "data": [{"event": "Purchase", "event_time": int(time.time()), "event_id": event_id}],
    }


def test_send_over_real_http_is_delivered(sandbox):
    client = EventsApiClient(sandbox.events_url, "test-access-token-0123456789", timeout=5)
    outcome = client.send(body_for())
    assert outcome.kind == DELIVERED
    assert outcome.event_count == 1
    assert outcome.request_id == sandbox.requests[0]["request_id"]
    assert "test-access-token-0123456789" not in repr(client)


def test_wrong_token_is_permanent(sandbox):
    client = EventsApiClient(sandbox.events_url, "wrong-token", timeout=5)
    outcome = client.send(body_for())
    assert (outcome.kind, outcome.http_status, outcome.code) == (PERMANENT, 200, 40001)


def test_timeout_and_connection_refused_are_transient(sandbox):
    sandbox.set_latency(1.0)
    client = EventsApiClient(sandbox.events_url, "test-access-token-0123456789", timeout=0.2)
    outcome = client.send(body_for())
    assert outcome.kind == TRANSIENT and "Timed out" in outcome.message

    closed = EventsApiClient("http://127.0.0.1:9/open_api/v1.3/event/track/", "t", timeout=2)
    outcome = closed.send(body_for())
    assert outcome.kind == TRANSIENT and outcome.http_status is None


def test_session_is_kept_alive_across_requests(sandbox):
    client = EventsApiClient(sandbox.events_url, "test-access-token-0123456789", timeout=5)
    assert isinstance(client.session, requests.Session)
    assert client.session.headers["User-Agent"].startswith("django-tiktok-tracking/")
    for i in range(3):
        assert client.send(body_for(event_id=f"order_{i}")).delivered
    adapter = client.session.get_adapter(sandbox.events_url)
    assert len(adapter.poolmanager.pools) == 1
