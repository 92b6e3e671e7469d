"""The sandbox as a real HTTP server: answers, recording, scripting, keep-alive and the CLI."""

import hashlib
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tiktok_tracking.sandbox import SandboxServer
from tiktok_tracking.sandbox.server import TRACK_PATH

TOKEN = "sandbox-secret-token-7f3a9c"
PIXEL = "CTESTPIXEL0001"
HEADERS = {"Access-Token": TOKEN}
REPO_ROOT = Path(__file__).resolve().parents[2]


def event(event_id="order_1007", name="Purchase"):
    return {
        "event": name,
        "event_time": int(time.time()) - 5,
        "event_id": event_id,
        "user": {
            "email": hashlib.sha256(b"ann@example.com").hexdigest(),
            "ip": "203.0.113.1",
            "user_agent": "Mozilla/5.0",
        },
        "properties": {
            "currency": "USD",
            "value": 89.99,
            "content_type": "product",
            "contents": [{"content_id": "SKU-123", "quantity": 1, "price": 89.99}],
            "order_id": "1007",
        },
    }


def body(*events, pixel=PIXEL):
    return {
        "event_source": "web",
        "event_source_id": pixel,
        "test_event_code": "TEST1",
        "data": list(events) or [event()],
    }


@pytest.fixture
def sandbox():
    with SandboxServer(token=TOKEN, pixels=[PIXEL]) as server:
        yield server


@pytest.fixture
def session():
    with requests.Session() as client:
        yield client


def post(sandbox, payload=None, headers=HEADERS, timeout=5, client=requests):
    return client.post(
        sandbox.events_url,
        json=body() if payload is None else payload,
        headers=headers,
        timeout=timeout,
    )


def test_accepts_a_valid_event_and_records_it(sandbox, session):
    response = post(sandbox, client=session)

    assert response.status_code == 200
    answer = response.json()
    assert answer["code"] == 0
    assert answer["message"] == "OK"
    assert answer["data"] == {}
    assert re.fullmatch(r"[0-9a-f]{32}", answer["request_id"])

    (record,) = sandbox.requests
    assert record["request_id"] == answer["request_id"]
    assert record["path"] == TRACK_PATH
    assert record["answer"] == {"status": 200, "code": 0, "message": "OK"}
    assert record["scripted"] is False
    assert record["access_token_present"] is True
    assert record["access_token_valid"] is True
    assert record["body"]["event_source_id"] == PIXEL
    assert record["body"]["data"][0]["event_id"] == "order_1007"
    assert record["raw_body_size"] == len(response.request.body)
    assert abs(record["received_at"] - time.time()) < 5
    assert not any(name.lower() == "access-token" for name in record["headers"])

    (flat,) = sandbox.events()
    assert flat["pixel"] == PIXEL
    assert flat["event"] == "Purchase"
    assert flat["event_id"] == "order_1007"
    assert flat["test_event_code"] == "TEST1"
    assert flat["request_id"] == answer["request_id"]
    assert flat["item"]["properties"]["value"] == 89.99
    assert sandbox.events_for("order_1007") == [flat]
    assert sandbox.events_for("order_1") == []


def test_batch_is_flattened_in_order(sandbox):
    post(sandbox, body(event("a", "AddToCart"), event("b", "InitiateCheckout"), event("c")))
    assert [(e["event"], e["event_id"]) for e in sandbox.events()] == [
        ("AddToCart", "a"),
        ("InitiateCheckout", "b"),
        ("Purchase", "c"),
    ]


def test_missing_access_token_is_http_200_with_40001(sandbox):
    response = post(sandbox, headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    assert response.json()["code"] == 40001
    assert "Access-Token" in response.json()["message"]
    (record,) = sandbox.requests
    assert record["access_token_present"] is False
    assert record["access_token_valid"] is False
    assert sandbox.events() == []


def test_wrong_token_and_wrong_pixel_are_40001(sandbox):
    wrong_token = post(sandbox, headers={"Access-Token": "nope"}).json()
    wrong_pixel = post(sandbox, body(pixel="COTHERPIXEL")).json()

    assert (wrong_token["code"], wrong_token["message"]) == (40001, "Access token is invalid.")
    assert wrong_pixel["code"] == 40001
    assert "COTHERPIXEL" in wrong_pixel["message"]
    assert [r["access_token_valid"] for r in sandbox.requests] == [False, True]


def test_invalid_field_is_http_200_with_40002_naming_it(sandbox):
    payload = body(event() | {"event_id": 1007})
    response = post(sandbox, payload)

    assert response.status_code == 200
    assert response.json()["code"] == 40002
    assert response.json()["message"] == "data.0.event_id: Not a valid string."
    assert sandbox.requests[0]["answer"]["code"] == 40002
    assert sandbox.events() == []


def test_malformed_json_is_recorded_with_null_body(sandbox):
    response = requests.post(
        sandbox.events_url,
        data=b"{not json",
        headers={**HEADERS, "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.json()["code"] == 40002
    (record,) = sandbox.requests
    assert record["body"] is None
    assert record["raw_body_size"] == len(b"{not json")


def test_token_is_never_recorded_or_shown(sandbox):
    post(sandbox)
    post(sandbox, headers={"Authorization": f"Bearer {TOKEN}"})
    post(sandbox, headers={"access_token": TOKEN, "X-Debug": f"token={TOKEN}"})
    sandbox.program([{"code": 40100}])
    post(sandbox)

    shown = requests.get(f"{sandbox.url}/sandbox/requests", timeout=5).text
    assert len(json.loads(shown)) == 4
    assert TOKEN not in shown
    assert TOKEN not in json.dumps(sandbox.requests)
    assert TOKEN not in json.dumps(sandbox.events())
    assert TOKEN not in repr(sandbox)


def test_scripted_answers_are_used_in_order_then_validation_resumes(sandbox, session):
    sandbox.program(
        [
            {"status": 503},
            {"code": 40100, "message": "Too many requests"},
            {"body": '{"code": 0, "message": "OK"'},
            {"status": 200, "code": 0, "message": "OK"},
        ]
    )

    unavailable = post(sandbox, client=session)
    throttled = post(sandbox, client=session)
    malformed = post(sandbox, client=session)
    scripted_ok = post(sandbox, body(event() | {"event_id": 5}), client=session)
    normal = post(sandbox, body(event() | {"event_id": 5}), client=session)

    assert unavailable.status_code == 503
    assert unavailable.json()["message"] == "Service Unavailable"
    assert throttled.status_code == 200
    assert throttled.json()["code"] == 40100
    assert throttled.json()["message"] == "Too many requests"
    assert malformed.text == '{"code": 0, "message": "OK"'
    with pytest.raises(ValueError):
        malformed.json()
    assert scripted_ok.json()["code"] == 0
    assert normal.json()["code"] == 40002

    records = sandbox.requests
    assert [r["scripted"] for r in records] == [True, True, True, True, False]
    assert [r["answer"]["status"] for r in records] == [503, 200, 200, 200, 200]
    assert [r["answer"]["code"] for r in records] == [0, 40100, None, 0, 40002]
    # The validator's own opinion is kept even when a script answered.
    assert records[3]["validation"]["code"] == 40002
    assert sandbox.pending_responses == 0
    # Only the request that was told "accepted" counts as delivered.
    assert [e["request_id"] for e in sandbox.events()] == [records[3]["request_id"]]


def test_scripted_delay(sandbox):
    sandbox.program([{"delay": 0.4}])
    started = time.monotonic()
    assert post(sandbox).json()["code"] == 0
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    post(sandbox)
    assert time.monotonic() - started < 0.4


def test_scripted_drop_closes_the_connection_without_answer(sandbox, session):
    sandbox.program([{"drop": True}])

    with pytest.raises(requests.ConnectionError):
        post(sandbox, client=session)
    (record,) = sandbox.requests
    assert record["scripted"] is True
    assert record["answer"] == {"status": None, "code": None, "message": "connection dropped"}
    assert sandbox.events() == []
    assert post(sandbox, client=session).json()["code"] == 0


def test_program_rejects_malformed_scripts(sandbox):
    for bad in ([{"stauts": 503}], [{"status": 42}], [{"delay": -1}], [{"drop": "yes"}], ["x"]):
        with pytest.raises(ValueError):
            sandbox.program(bad)
    assert sandbox.pending_responses == 0


def test_rejected_events_sink_every_request_that_carries_them(sandbox):
    sandbox.reject_events(["bad-1", "bad-2"], reason="properties.value: Not a valid number.")
    answer = post(sandbox, body(event("good-1"), event("bad-2"), event("bad-1"))).json()
    # The whole batch is refused, naming the first rejected event by its index.
    assert answer["code"] == 40002
    assert answer["message"] == "data.1.properties.value: Not a valid number."
    assert sandbox.events() == []
    assert (
        post(sandbox, body(event("good-1"), event("bad-1"))).json()["message"].startswith("data.1.")
    )
    assert post(sandbox, body(event("good-1"))).json()["code"] == 0
    assert [e["event_id"] for e in sandbox.events()] == ["good-1"]
    # A scripted answer still comes first; reset forgets the rejections.
    sandbox.program([{"status": 503}])
    assert post(sandbox, body(event("bad-1"))).status_code == 503
    sandbox.reset()
    assert post(sandbox, body(event("bad-1"))).json()["code"] == 0


def test_reject_events_refuses_bad_arguments(sandbox):
    for ids, reason in (([""], "x"), ([None], "x"), (["a"], ""), (["a"], None)):
        with pytest.raises(ValueError):
            sandbox.reject_events(ids, reason=reason)


def test_latency_is_applied_after_recording(sandbox):
    sandbox.set_latency(0.4)
    started = time.monotonic()
    assert post(sandbox).json()["code"] == 0
    assert time.monotonic() - started >= 0.4

    sandbox.set_latency(2)
    with pytest.raises(requests.Timeout):
        post(sandbox, body(event("slow")), timeout=0.3)
    # The request counts as received although the client gave up waiting.
    assert sandbox.requests[-1]["body"]["data"][0]["event_id"] == "slow"
    assert "slow" in [e["event_id"] for e in sandbox.events()]


def test_constructor_latency():
    with SandboxServer(latency=0.3) as server:
        started = time.monotonic()
        post(server)
        assert time.monotonic() - started >= 0.3
        assert server.latency == 0.3


def test_reset_clears_records_queue_and_latency():
    with SandboxServer(latency=0.05) as server:
        post(server)
        server.program([{"status": 500}, {"status": 500}])
        server.set_latency(3)
        server.reset()

        assert server.requests == []
        assert server.pending_responses == 0
        assert server.latency == 0.05
        assert post(server).status_code == 200


def test_http_control_endpoints(sandbox):
    control = f"{sandbox.url}/sandbox"

    programmed = requests.post(
        f"{control}/program", json=[{"code": 40100}, {"drop": True}], timeout=5
    )
    assert programmed.json() == {"ok": True, "pending": 2}
    assert post(sandbox).json()["code"] == 40100
    with pytest.raises(requests.ConnectionError):
        post(sandbox)

    assert (
        requests.post(f"{control}/latency", json={"seconds": 0.3}, timeout=5).json()["seconds"]
        == 0.3
    )
    started = time.monotonic()
    post(sandbox, body(event("e1")))
    assert time.monotonic() - started >= 0.3

    events = requests.get(f"{control}/events", timeout=5).json()
    assert [e["event_id"] for e in events] == ["e1"]
    filtered = requests.get(f"{control}/events", params={"event_id": "e1"}, timeout=5).json()
    assert filtered == events
    assert requests.get(f"{control}/events?event_id=none", timeout=5).json() == []
    assert len(requests.get(f"{control}/requests", timeout=5).json()) == 3

    assert requests.post(f"{control}/reset", timeout=5).json() == {"ok": True}
    assert requests.get(f"{control}/requests", timeout=5).json() == []
    assert sandbox.latency == 0.0


@pytest.mark.parametrize(
    ("path", "payload"),
    [("program", {"status": 503}), ("program", [{"bogus": 1}]), ("latency", {"seconds": -2})],
)
def test_http_control_rejects_bad_input(sandbox, path, payload):
    response = requests.post(f"{sandbox.url}/sandbox/{path}", json=payload, timeout=5)
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert sandbox.pending_responses == 0


def test_unknown_paths_are_json_404_and_not_recorded(sandbox):
    for url in (
        f"{sandbox.url}/open_api/v1.3/pixel/track/",
        f"{sandbox.url}/open_api/v1.3/event/track",
        f"{sandbox.url}/sandbox/nothing",
    ):
        response = requests.post(url, json=body(), headers=HEADERS, timeout=5)
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["code"] == 404

    wrong_method = requests.get(sandbox.events_url, timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert sandbox.requests == []


def test_keep_alive_reuses_one_connection(sandbox):
    connection = http.client.HTTPConnection(sandbox.host, sandbox.port, timeout=5)
    payload = json.dumps(body()).encode()
    headers = {**HEADERS, "Content-Type": "application/json"}
    try:
        sockets = []
        for _ in range(3):
            connection.request("POST", TRACK_PATH, body=payload, headers=headers)
            response = connection.getresponse()
            assert json.loads(response.read())["code"] == 0
            assert response.getheader("Content-Length") is not None
            sockets.append(connection.sock)
        assert sockets[0] is not None
        assert all(sock is sockets[0] for sock in sockets)

        connection.request(
            "POST", TRACK_PATH, body=payload, headers={**headers, "Connection": "close"}
        )
        response = connection.getresponse()
        assert response.getheader("Connection") == "close"
        assert json.loads(response.read())["code"] == 0
    finally:
        connection.close()
    assert len(sandbox.requests) == 4


def test_concurrent_requests_are_all_recorded(sandbox):
    def send(index):
        return post(sandbox, body(event(f"order_{index}"))).json()["request_id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        request_ids = list(pool.map(send, range(64)))

    assert len(set(request_ids)) == 64
    assert {r["request_id"] for r in sandbox.requests} == set(request_ids)
    assert len(sandbox.events()) == 64


def test_wait_for_returns_requests_or_times_out_with_a_description(sandbox):
    threading.Timer(0.1, post, args=(sandbox,)).start()
    requests_seen = sandbox.wait_for(lambda records: len(records) == 1, timeout=5)
    assert len(requests_seen) == 1

    def two_purchases(records):
        return len(records) >= 2

    with pytest.raises(
        TimeoutError, match=r"(?s)two_purchases.*1 request\(s\).*Purchase/order_1007"
    ):
        sandbox.wait_for(two_purchases, timeout=0.1)


def test_stop_releases_port_and_ends_idle_connections():
    server = SandboxServer().start()
    with requests.Session() as client:
        assert post(server, client=client).status_code == 200
        server.stop()
        server.stop()
        with pytest.raises(requests.ConnectionError):
            post(server, client=client, timeout=2)
    with pytest.raises(RuntimeError):
        server.start()


def test_stop_interrupts_a_latency_wait():
    server = SandboxServer(latency=30).start()
    errors = queue.Queue()

    def call():
        try:
            post(server, timeout=10)
        except requests.RequestException as exc:
            errors.put(exc)

    worker = threading.Thread(target=call)
    worker.start()
    server.wait_for(bool, timeout=5)
    started = time.monotonic()
    server.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert time.monotonic() - started < 5
    assert isinstance(errors.get_nowait(), requests.ConnectionError)


def test_url_properties(sandbox):
    assert sandbox.url == f"http://127.0.0.1:{sandbox.port}"
    assert sandbox.events_url == f"http://127.0.0.1:{sandbox.port}/open_api/v1.3/event/track/"
    assert sandbox.port > 0


def _read_first_line(stream, timeout):
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    return lines.get(timeout=timeout)


def test_command_line_runs_until_terminated():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "tiktok_tracking.sandbox",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--pixel",
        PIXEL,
        "COTHER",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _read_first_line(process.stdout, timeout=20).strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url

        deadline = time.monotonic() + 20
        while True:
            try:
                health = requests.get(f"{url}/sandbox/health", timeout=1).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "sandbox CLI never answered"
                time.sleep(0.05)
        assert health["events_url"] == url + TRACK_PATH

        answer = requests.post(url + TRACK_PATH, json=body(), headers=HEADERS, timeout=5).json()
        assert answer["code"] == 0
        other = requests.post(
            url + TRACK_PATH, json=body(pixel="CUNKNOWN"), headers=HEADERS, timeout=5
        ).json()
        assert other["code"] == 40001
        events = requests.get(f"{url}/sandbox/events", timeout=5).json()
        assert [e["event_id"] for e in events] == ["order_1007"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        stdout, stderr = process.communicate(timeout=10)
    assert TOKEN not in stdout + stderr
    assert "Traceback" not in stderr
