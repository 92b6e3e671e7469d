"""The fault matrix's own tools: the exactly-once verdict and the toggling proxy."""

import socket
import threading

import pytest

from tests.faults.harness import judge
from tests.faults.proxy import BLACKHOLE, FORWARD, REFUSE, ToggleProxy


def test_verdict_counts_each_event_id_once_and_names_every_kind_of_error():
    verdict = judge(
        ["a", "b", "b", "x"],
        ["a", "b", "b", "x", "r"],
        expected={"a", "b", "c"},
        forbidden={"r", "x"},
    )
    assert verdict.counted == 2
    assert verdict.missing == ["c"]
    assert verdict.unexpected == ["x"]
    assert verdict.leaked == ["r", "x"]
    assert verdict.resent == 1
    problems = verdict.problems(allow_resends=False)
    assert len(problems) == 4
    assert len(verdict.problems(allow_resends=True)) == 3


def test_verdict_of_a_clean_run_has_no_problems():
    verdict = judge(["a", "b"], ["a", "b"], expected={"a", "b"}, forbidden={"z"})
    assert verdict.problems(allow_resends=False) == []
    assert verdict.counted == 2


@pytest.fixture
def echo_server():
    """A TCP echo server on loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn):
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    stop.set()
    thread.join()
    listener.close()


def round_trip(port, payload=b"ping", timeout=1.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload)
        return conn.recv(1024)


def test_proxy_forwards_refuses_and_comes_back_on_the_same_port(echo_server):
    proxy = ToggleProxy(*echo_server)
    try:
        assert round_trip(proxy.port) == b"ping"
        open_conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
        open_conn.sendall(b"open")
        assert open_conn.recv(1024) == b"open"

        proxy.set_mode(REFUSE)
        with pytest.raises(ConnectionRefusedError):
            round_trip(proxy.port)
        # A connection opened before the outage does not survive it.
        with pytest.raises(OSError):
            open_conn.sendall(b"x")
            if not open_conn.recv(1024):
                raise ConnectionResetError("closed")
        open_conn.close()

        proxy.set_mode(FORWARD)
        assert round_trip(proxy.port, b"back") == b"back"
    finally:
        proxy.close()


def test_blackholed_proxy_accepts_and_never_answers(echo_server):
    proxy = ToggleProxy(*echo_server)
    try:
        proxy.set_mode(BLACKHOLE)
        with pytest.raises(TimeoutError):
            round_trip(proxy.port, timeout=0.5)
        assert proxy.accepted >= 1
        proxy.set_mode(FORWARD)
        assert round_trip(proxy.port) == b"ping"
    finally:
        proxy.close()


def test_proxy_refuses_unknown_modes(echo_server):
    proxy = ToggleProxy(*echo_server)
    try:
        with pytest.raises(ValueError):
            proxy.set_mode("sideways")
    finally:
        proxy.close()
