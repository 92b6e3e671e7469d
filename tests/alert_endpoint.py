"""A shop's readiness-alert endpoint on a real HTTP server, and the alert as it reads one; and
endpoints gone wrong: one that redirects, one that never answers, one whose answer trickles."""

import hashlib
import hmac
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    """Records each request's path, headers and raw body; answers the status the test queued.

    A 3xx answer points to ``/moved`` on the same server, where a GET is recorded too: a
    client that follows the redirect shows up in ``received``.
    """

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.arrivals.append(time.monotonic())
        self.server.received.append((self.path, self.headers, body))
        time.sleep(self.server.delay)
        self.answer()

    def do_GET(self):
        self.server.received.append((self.path, self.headers, b""))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer(self):
        status = self.server.answers.pop(0) if self.server.answers else 204
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "/moved")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class _HangingHandler(_Handler):
    """Takes the POST whole, then never answers (until the server is closed)."""

    def answer(self):
        self.server.closing.wait()


class _TricklingHandler(_Handler):
    """Answers 200 at once, then sends its headers a few bytes every ``trickle`` seconds,
    without end: each wait on the socket is short, the answer never completes."""

    def answer(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
        while not self.server.closing.wait(self.server.trickle):
            try:
                self.wfile.write(b"abc")
                self.wfile.flush()
            except OSError:
                return  # the client gave up and closed the connection


@contextmanager
def _serving(handler, delay=0.0, trickle=0.2):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.received, server.answers, server.delay = [], [], delay
    # When each POST arrived (time.monotonic()), in the order of ``received``.
    server.arrivals = []
    server.trickle, server.closing = trickle, threading.Event()
    server.url = f"http://127.0.0.1:{server.server_port}/alerts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()


def alert_endpoint(delay=0.0):
    """A running server: ``.url``, ``.received`` [(path, headers, body)] and ``.answers``, the
    statuses to give the next POSTs (204 once they run out), each given ``delay`` seconds
    after the POST arrived."""
    return _serving(_Handler, delay=delay)


def hanging_endpoint():
    """An endpoint that reads each POST and never answers: ``.url``, ``.received``."""
    return _serving(_HangingHandler)


def trickling_endpoint(trickle=0.2):
    """An endpoint whose answer comes three bytes every ``trickle`` seconds and never ends."""
    return _serving(_TricklingHandler, trickle=trickle)


ENDPOINTS_GONE_WRONG = {"hanging": hanging_endpoint, "trickling": trickling_endpoint}


def verified(headers, body, secret):
    """The alert as the receiving shop reads it: the signature recomputed from the secret, the
    timestamp header and the raw body (not with the app's own function), a fresh timestamp (a
    receiver refuses old ones, so a replayed alert fails) and a JSON body."""
    timestamp = headers["X-TikTok-Tracking-Timestamp"]
    signed = f"{timestamp}.".encode() + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-TikTok-Tracking-Signature"], expected)
    assert abs(time.time() - int(timestamp)) < 120
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)
