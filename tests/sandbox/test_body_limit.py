"""The sandbox's body limit: a proxy in front of the endpoint, answering 413 with its HTML page."""

import json
import os
import subprocess
import sys

import pytest
import requests

from tests.sandbox.test_server import (
    HEADERS,
    PIXEL,
    REPO_ROOT,
    TOKEN,
    _read_first_line,
    body,
    event,
)
from tiktok_tracking.sandbox import SandboxServer
from tiktok_tracking.sandbox.server import PROXY_TOO_LARGE_PAGE, REFUSED_BY_BODY_LIMIT, TRACK_PATH


def encoded(payload):
    return json.dumps(payload).encode()


def post_raw(sandbox, data, client=requests):
    return client.post(
        sandbox.events_url,
        data=data,
        headers={**HEADERS, "Content-Type": "application/json"},
        timeout=5,
    )


def test_a_body_over_the_limit_gets_a_proxy_413_and_reaches_no_endpoint():
    small, large = (
        encoded(body(event("small"))),
        encoded(body(*[event(f"e{n}") for n in range(20)])),
    )
    with SandboxServer(token=TOKEN, pixels=[PIXEL], max_body_bytes=len(small)) as sandbox:
        sandbox.program([{"code": 40002, "message": "scripted"}])
        refused = post_raw(sandbox, large)
        assert refused.status_code == 413
        assert refused.headers["Content-Type"] == "text/html"
        assert refused.headers["Connection"] == "close"
        assert refused.content == PROXY_TOO_LARGE_PAGE
        # The scripted answer is still queued: the proxy answered before the endpoint.
        assert sandbox.pending_responses == 1
        record = sandbox.requests[-1]
        assert record["refused"] == REFUSED_BY_BODY_LIMIT
        assert record["raw_body_size"] == len(large)
        assert record["answer"]["status"] == 413 and record["answer"]["code"] is None
        assert [item["event_id"] for item in record["body"]["data"]][:2] == ["e0", "e1"]
        assert "Access-Token" not in record["headers"]
        assert sandbox.events() == []

        # A body at the limit passes (and meets the scripted answer).
        assert post_raw(sandbox, small).json()["code"] == 40002
        assert post_raw(sandbox, small).json()["code"] == 0
        assert [event["event_id"] for event in sandbox.events()] == ["small"]


def test_the_body_limit_is_set_at_run_time_over_http_and_reset():
    with SandboxServer(token=TOKEN, pixels=[PIXEL]) as sandbox, requests.Session() as session:
        data = encoded(body())
        assert post_raw(sandbox, data, session).status_code == 200
        answer = session.post(f"{sandbox.url}/sandbox/body-limit", json={"bytes": 10}, timeout=5)
        assert answer.json() == {"ok": True, "bytes": 10}
        assert sandbox.body_limit == 10
        assert post_raw(sandbox, data, session).status_code == 413
        # The keep-alive session reconnects after the proxy closed the connection.
        session.post(f"{sandbox.url}/sandbox/body-limit", json={"bytes": None}, timeout=5)
        assert post_raw(sandbox, data, session).status_code == 200
        sandbox.set_body_limit(10)
        sandbox.reset()
        assert sandbox.body_limit is None
        bad = session.post(f"{sandbox.url}/sandbox/body-limit", json={"bytes": -1}, timeout=5)
        assert bad.status_code == 400 and "body limit" in bad.json()["error"]


@pytest.mark.parametrize("value", [-1, 1.5, True, "1m"])
def test_a_body_limit_that_is_not_a_number_of_bytes_is_refused(value):
    with pytest.raises(ValueError, match="body limit"):
        SandboxServer(max_body_bytes=value)
    with SandboxServer() as sandbox, pytest.raises(ValueError, match="body limit"):
        sandbox.set_body_limit(value)


def test_the_command_line_sets_the_body_limit():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tiktok_tracking.sandbox", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--max-body-bytes", "64"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = _read_first_line(process.stdout, timeout=20).strip()
        answer = requests.post(url + TRACK_PATH, data=b"x" * 65, headers=HEADERS, timeout=5)
        assert answer.status_code == 413
        assert answer.content == PROXY_TOO_LARGE_PAGE
    finally:
        process.terminate()
        process.wait(timeout=10)
