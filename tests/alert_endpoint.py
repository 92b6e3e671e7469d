"""A shop's readiness-alert endpoint on a real HTTP server, and the alert as it reads one."""

import hashlib
import hmac
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    """Records each POST's path, headers and raw body; answers the status the test queued."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers, body))
        time.sleep(self.server.delay)
        status = self.server.answers.pop(0) if self.server.answers else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def alert_endpoint(delay=0.0):
    """A running server: ``.url``, ``.received`` [(path, headers, body)] and ``.answers``, the
    statuses to give the next POSTs (204 once they run out), each given ``delay`` seconds
    after the POST arrived."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.received, server.answers, server.delay = [], [], delay
    server.url = f"http://127.0.0.1:{server.server_port}/alerts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


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
