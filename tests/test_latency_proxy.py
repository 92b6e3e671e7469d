"""The latency proxy: every byte through, in order, each way ``rtt / 2`` later."""

import socket
import threading
import time

import pytest

from tests.latency_proxy import LatencyProxy, LatencyProxyProcess, url_through


@pytest.fixture
def echo_server():
    """A TCP server that sends back whatever it receives, until the client closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()
    listener.close()


def round_trip(port, payload):
    """Send ``payload`` through the proxy on ``port``; the echo, and the seconds it took."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        conn.sendall(payload)
        received = bytearray()
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return bytes(received), time.perf_counter() - started


def test_a_round_trip_takes_at_least_the_added_time_and_loses_nothing(echo_server):
    proxy = LatencyProxy(echo_server, rtt_seconds=0.04)
    try:
        echoed, seconds = round_trip(proxy.port, b"ping")
        assert echoed == b"ping"
        assert seconds >= 0.04
        # A megabyte in many chunks comes back whole and in order: a link with latency, not a
        # slow one, so it does not take a round trip per chunk.
        payload = bytes(range(256)) * 4096
        echoed, seconds = round_trip(proxy.port, payload)
        assert echoed == payload
        assert seconds >= 0.04
    finally:
        proxy.close()


def test_without_added_time_it_forwards_as_is(echo_server):
    proxy = LatencyProxy(echo_server, rtt_seconds=0)
    try:
        assert round_trip(proxy.port, b"x" * 100_000)[0] == b"x" * 100_000
    finally:
        proxy.close()


def test_the_proxy_runs_as_a_process_of_its_own(echo_server):
    proxy = LatencyProxyProcess(echo_server, rtt_seconds=0.02)
    try:
        echoed, seconds = round_trip(proxy.port, b"hello")
        assert echoed == b"hello" and seconds >= 0.02
    finally:
        proxy.close()
    assert proxy.process.returncode == 0


def test_a_closed_upstream_closes_the_client(echo_server):
    proxy = LatencyProxy(("127.0.0.1", 9), rtt_seconds=0.01)  # nothing listens on port 9
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
            conn.settimeout(5)
            assert conn.recv(10) == b""
    finally:
        proxy.close()


def test_urls_keep_their_credentials_and_path():
    assert (
        url_through("postgres://postgres:pw@db.example:5432/shop", 7000)
        == "postgres://postgres:pw@127.0.0.1:7000/shop"
    )
    assert url_through("redis://127.0.0.1:6379/13", 7001) == "redis://127.0.0.1:7001/13"


def test_the_threaded_proxy_counts_each_question_answered_as_one_round_trip(echo_server):
    proxy = LatencyProxy(echo_server, rtt_seconds=0)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
            for _ in range(3):
                conn.sendall(b"ping")
                received = b""
                while len(received) < 4:
                    received += conn.recv(4 - len(received))
                assert received == b"ping"
        assert proxy.round_trips == 3
    finally:
        proxy.close()
