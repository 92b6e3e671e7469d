"""The Events API client: answer classification (pure) and real HTTP against the sandbox."""

import json

import pytest
import requests

from tiktok_tracking.client import (
    DELIVERED,
    MAX_ANSWER_BYTES,
    MAX_MESSAGE_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    PERMANENT,
    TRANSIENT,
    UNKNOWN_ANSWER_MAX_ATTEMPTS,
    EventsApiClient,
    classify_response,
)
from tiktok_tracking.standards import CODE_INTERNAL_ERROR, CODE_SERVICE_UNAVAILABLE


def envelope(code, message="", request_id="req-1"):
    return json.dumps({"code": code, "message": message, "request_id": request_id, "data": {}})


@pytest.mark.parametrize(
    "status, body, kind, code",
    [
        (200, envelope(0, "OK"), DELIVERED, 0),
        (200, envelope(20001, "Partial success"), DELIVERED, 20001),
        (200, envelope(40001, "No permission"), PERMANENT, 40001),
        (200, envelope(40002, "data.0.event_id: Not a valid string."), PERMANENT, 40002),
        (200, envelope(40100, "Too many requests"), TRANSIENT, 40100),
        (200, envelope(CODE_INTERNAL_ERROR, "Internal error"), TRANSIENT, 50000),
        (200, envelope(CODE_SERVICE_UNAVAILABLE, "Service unavailable"), TRANSIENT, 50002),
        (200, envelope(51234, "Something new"), TRANSIENT, 51234),
        (200, envelope(12345, "Something else"), TRANSIENT, 12345),
        (200, envelope(2**31 + 1, "Too big to store"), TRANSIENT, None),
        (200, envelope(True, "Not a number"), TRANSIENT, None),
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


@pytest.mark.parametrize("code", [12345, 2**31 + 1, "0", None])
def test_answers_the_app_cannot_place_are_retried_a_bounded_number_of_times(code):
    outcome = classify_response(200, envelope(code, "new").encode())
    assert outcome.kind == TRANSIENT
    assert outcome.max_attempts == UNKNOWN_ANSWER_MAX_ATTEMPTS
    # The whole answer is kept, the raw code quoted when it cannot be stored.
    assert '"request_id":"req-1"' in outcome.message
    assert json.dumps(code) in outcome.message


@pytest.mark.parametrize("code", [0, 20001, 40001, 40002, 40100, 50000, 50002])
def test_documented_codes_are_retried_as_long_as_the_window_allows(code):
    assert classify_response(200, envelope(code).encode()).max_attempts is None


def test_every_field_of_an_answer_fits_its_column_and_hides_the_token(settings):
    token = settings.TIKTOK_TRACKING["ACCESS_TOKEN"]
    body = envelope(40001, f"bad\x00 {token} " + "m" * 5000, f"{token}\x00\x07" + "r" * 300)
    outcome = classify_response(200, body.encode(), secrets=["another-token-abc"])
    assert token not in outcome.message + outcome.request_id
    assert "\x00" not in outcome.message + outcome.request_id
    assert outcome.request_id.isprintable()
    assert len(outcome.request_id) == MAX_REQUEST_ID_LENGTH
    assert len(outcome.message) == MAX_MESSAGE_LENGTH
    assert outcome.message.startswith("bad (secret) mmm")
    other = classify_response(
        503, b"upstream says another-token-abc", secrets=["another-token-abc"]
    )
    assert "another-token-abc" not in other.message


def test_partial_success_keeps_the_whole_answer():
    body = json.dumps({"code": 20001, "message": "Partial", "data": {"failed": [{"index": 2}]}})
    outcome = classify_response(200, body.encode())
    assert outcome.delivered
    assert '"failed":[{"index":2}]' in outcome.message


def test_request_id_and_message_are_kept():
    outcome = classify_response(200, envelope(40002, "data.3.user.email: bad", "abc123").encode())
    assert outcome.request_id == "abc123"
    assert outcome.message == "data.3.user.email: bad"


def test_unreadable_bodies_are_truncated_for_the_admin():
    outcome = classify_response(200, b"x" * 10_000)
    assert len(outcome.message) < 2100


def test_an_answer_too_long_is_not_read_whole(sandbox):
    huge = envelope(0, "x" * (4 * MAX_ANSWER_BYTES))
    sandbox.program([{"status": 200, "body": huge}])
    client = EventsApiClient(sandbox.events_url, "test-access-token-0123456789", timeout=5)
    outcome = client.send(body_for())
    assert outcome.kind == TRANSIENT
    assert outcome.max_attempts == UNKNOWN_ANSWER_MAX_ATTEMPTS
    assert "not read whole" in outcome.message
    assert len(outcome.message) <= MAX_MESSAGE_LENGTH


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


# Requests refused for their size -------------------------------------------------------------

NGINX_413_PAGE = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize(
    "status, body, complete, code",
    [
        (413, NGINX_413_PAGE, True, None),
        (413, "", True, None),
        (413, envelope(413, "Request body too large."), True, 413),
        (413, envelope(40002, "body too large"), True, 40002),
        (413, "<html>" + "x" * MAX_ANSWER_BYTES, False, None),
        (200, envelope(40061, "Too many events in one batch."), True, 40061),
        (400, envelope(40061, "Too many events in one batch."), True, 40061),
    ],
)
def test_answers_refusing_the_size_of_a_request_are_told_apart(status, body, complete, code):
    outcome = classify_response(status, body.encode(), complete=complete)
    assert outcome.kind == PERMANENT
    assert outcome.too_large
    assert outcome.code == code
    assert len(outcome.message) <= MAX_MESSAGE_LENGTH
    if status == 413:
        assert outcome.message.startswith("Refused as too large (HTTP 413)")


@pytest.mark.parametrize(
    "status, body",
    [
        (200, envelope(40002, "data.0.event_id: Not a valid string.")),
        (200, envelope(0, "OK")),
        (400, NGINX_413_PAGE.replace("413", "400")),
        (401, "unauthorized"),
        (503, NGINX_413_PAGE),
        (200, envelope(50002, "Service unavailable")),
    ],
)
def test_other_answers_are_not_taken_for_a_size_refusal(status, body):
    assert not classify_response(status, body.encode()).too_large


def test_a_proxy_413_over_real_http_is_a_size_refusal(sandbox):
    sandbox.set_body_limit(64)
    client = EventsApiClient(sandbox.events_url, "test-access-token-0123456789", timeout=5)
    outcome = client.send(body_for())
    assert (outcome.kind, outcome.http_status, outcome.code) == (PERMANENT, 413, None)
    assert outcome.too_large
    assert "413 Request Entity Too Large" in outcome.message
    # The proxy closed the connection; the next request opens another and is answered.
    sandbox.set_body_limit(None)
    assert client.send(body_for(event_id="order_2")).delivered
