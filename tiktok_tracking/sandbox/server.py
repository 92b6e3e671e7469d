"""A local HTTP stand-in for TikTok's Events API v1.3 and its browser pixel, for tests and demos."""

from __future__ import annotations

import contextlib
import copy
import html
import json
import math
import secrets
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tiktok_tracking.sandbox.validation import (
    CODE_INVALID_PARAMETER,
    CODE_NO_PERMISSION,
    CODE_OK,
    CODE_TOO_MANY_REQUESTS,
    NOT_PARSED,
    parse_body,
    token_status,
    validate_request,
)
from tiktok_tracking.standards import PURCHASE_EVENT_NAMES

__all__ = [
    "CONTROL_PREFIX",
    "PIXEL_EVENTS_PATH",
    "PIXEL_SCRIPT_PATH",
    "TRACK_PATH",
    "SandboxServer",
]

TRACK_PATH = "/open_api/v1.3/event/track/"
CONTROL_PREFIX = "/sandbox/"
MAX_BODY_BYTES = 32 * 1024 * 1024
# TikTok's own script path, so a shop only swaps the origin in PIXEL_SCRIPT_URL.
PIXEL_SCRIPT_PATH = "/i18n/pixel/events.js"
PIXEL_EVENTS_PATH = "/sandbox/pixel"
MAX_PIXEL_BODY_BYTES = 64 * 1024
_PIXEL_JS = Path(__file__).with_name("pixel.js")
_PIXEL_METHODS = {"track": None, "page": "Pageview"}
# Allowed from any page: the fake pixel runs on the shop's origin, not the sandbox's.
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    ("Access-Control-Max-Age", "600"),
)
MERGED = "merged (both lanes, one event)"
SERVER_ONLY = "server only"
BROWSER_ONLY = "browser only"
_PAGE_REQUESTS = 50
_PAGE_REFRESH_SECONDS = 3

# What a proxy in front of the endpoint answers to a body over its limit (nginx's page, word for
# word but the server's name): HTML, not TikTok's JSON envelope.
PROXY_TOO_LARGE_PAGE = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n"
    b"<hr><center>sandbox proxy</center>\r\n</body>\r\n</html>\r\n"
)
REFUSED_BY_BODY_LIMIT = "body limit"

_SCRIPT_KEYS = frozenset({"status", "code", "message", "delay", "body", "drop"})
_DEFAULT_MESSAGES = {
    CODE_OK: "OK",
    CODE_NO_PERMISSION: "No permission to operate pixel code.",
    CODE_INVALID_PARAMETER: "Invalid parameters.",
    CODE_TOO_MANY_REQUESTS: "Too many requests. Please retry in some time.",
}
# Header names are compared with "_" folded to "-", so "Access_Token" cannot slip through.
_SECRET_HEADERS = frozenset({"access-token"})
_MASKED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_MASK = "[redacted]"


def _new_request_id() -> str:
    return secrets.token_hex(16)


def _check_delay(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_body_limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"the body limit must be a number of bytes >= 0 or None, got {value!r}")
    return value


def _check_script(item: Any, index: int) -> dict[str, Any]:
    """Reject a malformed canned answer when it is queued, not when a client hits it."""
    where = f"response {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object, got {item!r}")
    unknown = set(item) - _SCRIPT_KEYS
    if unknown:
        raise ValueError(
            f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_SCRIPT_KEYS)}"
        )
    status = item.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"{where}: status must be an HTTP status code, got {status!r}")
    code = item.get("code", CODE_OK)
    if isinstance(code, bool) or not isinstance(code, int):
        raise ValueError(f"{where}: code must be an integer, got {code!r}")
    for key in ("message", "body"):
        if key in item and not isinstance(item[key], str):
            raise ValueError(f"{where}: {key} must be a string, got {item[key]!r}")
    if "delay" in item:
        _check_delay(item["delay"], f"{where}: delay")
    if "drop" in item and not isinstance(item["drop"], bool):
        raise ValueError(f"{where}: drop must be true or false, got {item['drop']!r}")
    return dict(item)


def _default_message(status: int, code: int) -> str:
    if status != 200 and code == CODE_OK:
        try:
            return HTTPStatus(status).phrase
        except ValueError:
            return "Error"
    return _DEFAULT_MESSAGES.get(code, "Error")


def _recordable_headers(headers: Any, secrets: Iterable[str]) -> dict[str, str]:
    """The request headers as recorded: no access token is ever kept, in any header."""
    secrets = [secret for secret in secrets if secret]
    recorded: dict[str, str] = {}
    for name, value in headers.items():
        folded = name.lower().replace("_", "-")
        if folded in _SECRET_HEADERS:
            continue
        if folded in _MASKED_HEADERS or any(secret in value for secret in secrets):
            recorded[name] = _MASK
        else:
            recorded[name] = value
    return recorded


def _check_pixel_call(body: Any) -> dict[str, Any]:
    """The browser event recorded for a pixel call; raises ``ValueError`` naming the bad field."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    pixel = body.get("pixel")
    if not isinstance(pixel, str) or not pixel.strip():
        raise ValueError("pixel must be a non-empty string")
    method = body.get("method")
    if method not in _PIXEL_METHODS:
        raise ValueError(f"method must be one of {sorted(_PIXEL_METHODS)}, got {method!r}")
    event = _PIXEL_METHODS[method] or body.get("event")
    if not isinstance(event, str) or not event.strip():
        raise ValueError("event must be a non-empty string")
    for key in ("properties", "options"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise ValueError(f"{key} must be an object")
    options = body.get("options") or {}
    event_id = options.get("event_id")
    # A number here is the classic bug (891 never matches "891"): refuse it loudly.
    if event_id is not None and not isinstance(event_id, str):
        raise ValueError(f"options.event_id must be a string, got {event_id!r}")
    page_url = body.get("page_url")
    if page_url is not None and not isinstance(page_url, str):
        raise ValueError("page_url must be a string")
    return {
        "pixel": pixel,
        "method": method,
        "event": event,
        "event_id": event_id or None,
        "properties": body.get("properties") or {},
        "options": options,
        "page_url": page_url,
    }


def _first_rejected(body: Any, rejected: Collection[str]) -> int | None:
    """The index of the first event in ``body`` whose event_id is in ``rejected``, if any."""
    data = body.get("data") if isinstance(body, dict) else None
    for index, item in enumerate(data if isinstance(data, list) else ()):
        if isinstance(item, dict) and item.get("event_id") in rejected:
            return index
    return None


def _merge_key(event: dict[str, Any]) -> tuple[str, str, str] | None:
    """TikTok's deduplication key, or None for an event that can never be merged."""
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        return None
    return (str(event.get("pixel")), str(event.get("event")), event_id)


def _fmt_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return (
        time.strftime("%H:%M:%S", time.localtime(timestamp))
        + f".{int(timestamp * 1000) % 1000:03d}"
    )


def _describe(record: dict[str, Any]) -> str:
    answer = record["answer"]
    body = record["body"]
    events = []
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        events = [
            f"{item.get('event')}/{item.get('event_id')}"
            for item in body["data"]
            if isinstance(item, dict)
        ]
    return (
        f"{record['path']} -> HTTP {answer['status']} code {answer['code']} "
        f"{answer['message']!r}{' (scripted)' if record['scripted'] else ''}; "
        f"events {events}"
    )


class _Server(ThreadingHTTPServer):
    """Remembers open connections so that stopping also ends idle keep-alive ones."""

    daemon_threads = True
    # socketserver's default backlog of 5 resets bursts of parallel clients (benchmarks).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sandbox = sandbox
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host's FQDN, which can stall on a bad resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer are normal here (timeouts, drop tests).
        if self.sandbox.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes; with Nagle's algorithm the second waits
    # for the client's delayed ACK (about 40 ms), which TikTok's servers do not add.
    disable_nagle_algorithm = True
    server_version = "TikTokSandbox/1.0"
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.verbose:
            super().log_message(format, *args)

    # --- plumbing ---

    def _read_body(self, limit: int = MAX_BODY_BYTES) -> bytes | None:
        """The request body, or None after answering a request whose body cannot be read."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(HTTPStatus.BAD_REQUEST, "Invalid Content-Length.")
            return None
        if length > limit:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large.")
            return None
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes | None:
        chunks = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._refuse(HTTPStatus.BAD_REQUEST, "Invalid chunked body.")
                return None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large.")
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        # The rest of the stream cannot be trusted to start a new request.
        self.close_connection = True
        self.send_json(status, {"code": int(status), "message": message})

    def send_bytes(
        self,
        status: int,
        payload: bytes,
        content_type: str = "application/json",
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra_headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def send_json(
        self, status: int, value: Any, extra_headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.send_bytes(status, json.dumps(value).encode("utf-8"), extra_headers=extra_headers)

    def _not_found(self, path: str) -> None:
        self.send_json(
            HTTPStatus.NOT_FOUND,
            {
                "code": int(HTTPStatus.NOT_FOUND),
                "message": f"Not found: {path}",
                "request_id": _new_request_id(),
                "data": {},
            },
        )

    def send_empty(self, status: int, extra_headers: Iterable[tuple[str, str]] = ()) -> None:
        """An answer without a body (204 must not carry even a Content-Length)."""
        self.send_response(status)
        for name, value in extra_headers:
            self.send_header(name, value)
        if status != HTTPStatus.NO_CONTENT:
            self.send_header("Content-Length", "0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        is_pixel = url.path.rstrip("/") == PIXEL_EVENTS_PATH
        body = self._read_body(MAX_PIXEL_BODY_BYTES if is_pixel else MAX_BODY_BYTES)
        if body is None:
            return
        sandbox = self.server.sandbox
        if url.path == PIXEL_SCRIPT_PATH and method == "GET":
            self._send_pixel_script()
        elif is_pixel:
            sandbox._handle_pixel(self, method, body)
        elif url.path == TRACK_PATH:
            if method == "POST":
                sandbox._handle_track(self, url.path, body)
            else:
                self.send_json(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    {
                        "code": int(HTTPStatus.METHOD_NOT_ALLOWED),
                        "message": f"Method {method} not allowed; use POST.",
                        "request_id": _new_request_id(),
                        "data": {},
                    },
                    extra_headers=[("Allow", "POST")],
                )
        elif url.path.startswith(CONTROL_PREFIX):
            sandbox._handle_control(self, method, url.path, url.query, body)
        else:
            self._not_found(url.path)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        path = urlsplit(self.path).path
        if path.rstrip("/") != PIXEL_EVENTS_PATH and path != PIXEL_SCRIPT_PATH:
            self._dispatch("OPTIONS")
            return
        if self._read_body(MAX_PIXEL_BODY_BYTES) is None:
            return
        # A preflight is answered yes to whatever it asks: the pixel lane has no secrets.
        requested = self.headers.get("Access-Control-Request-Headers")
        self.send_empty(
            HTTPStatus.NO_CONTENT,
            [
                *_CORS_HEADERS,
                ("Access-Control-Allow-Headers", requested or "Content-Type"),
                ("Access-Control-Allow-Private-Network", "true"),
            ],
        )

    def _send_pixel_script(self) -> None:
        self.send_bytes(
            HTTPStatus.OK,
            _PIXEL_JS.read_bytes(),
            content_type="application/javascript; charset=utf-8",
            extra_headers=[("Cache-Control", "no-store"), ("Access-Control-Allow-Origin", "*")],
        )


class SandboxServer:
    """A real HTTP server that answers like TikTok's Events API track endpoint.

    ``token`` None accepts any non-empty Access-Token; ``pixels`` None accepts any pixel.
    ``tokens`` maps pixel codes to their own tokens, as TikTok gives each pixel one: a request
    must then carry its pixel's token, and only those pixels are accepted.
    Every track request is recorded (without its token) before any latency is slept, so a
    client that gives up while waiting is still seen as having delivered, as with TikTok.
    Errors are HTTP 200 with a non-zero ``code``, as TikTok sends them.
    ``store``, a file path, keeps the track requests and pixel calls across restarts: read at
    start, each new one appended as a JSON line, emptied by :meth:`reset` (the page's "Clear").
    ``max_body_bytes`` plays a proxy in front of the endpoint (nginx's ``client_max_body_size``):
    a track request whose body is longer is answered HTTP 413 with an HTML page, never reaching
    the endpoint (recorded, with ``refused`` set; none of its events is accepted).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        pixels: Collection[str] | None = None,
        tokens: Mapping[str, str] | None = None,
        latency: float = 0.0,
        verbose: bool = False,
        store: str | Path | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self._token = token
        self._tokens = dict(tokens) if tokens else {}
        if pixels is None and self._tokens:
            pixels = self._tokens
        self._pixels = frozenset(pixels) if pixels is not None else None
        self._initial_latency = _check_delay(latency, "latency")
        self.verbose = verbose
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        # Pixel calls as they arrived: track calls are browser events, page calls page views.
        self._pixel_calls: list[dict[str, Any]] = []
        self._queue: deque[dict[str, Any]] = deque()
        # event_id -> the field error TikTok would name for it (see reject_events).
        self._rejected: dict[str, str] = {}
        self._latency = self._initial_latency
        self._initial_body_limit = _check_body_limit(max_body_bytes)
        self._body_limit = self._initial_body_limit
        # Set on stop(): wakes handlers sleeping out a latency so they end at once.
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._serving_thread: threading.Thread | None = None
        self._closed = False
        self._store = Path(store) if store is not None else None
        if self._store is not None:
            self._load_store()
        self._httpd = _Server((host, port), self)
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host = str(bound_host)
        self.port = int(bound_port)

    # --- lifecycle ---

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def events_url(self) -> str:
        return self.url + TRACK_PATH

    def start(self) -> SandboxServer:
        """Serve on a background daemon thread; returns self."""
        if self._thread is not None or self._closed:
            raise RuntimeError("SandboxServer can only be started once")
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"tiktok-sandbox-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another thread."""
        self._serving_thread = threading.current_thread()
        try:
            self._httpd.serve_forever(poll_interval=0.05)
        finally:
            self._serving_thread = None

    def stop(self) -> None:
        """Stop serving, end open connections and release the port. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        # shutdown() also works if the thread from start() has not entered its loop yet.
        owner = self._thread or self._serving_thread
        if owner is not None and owner is not threading.current_thread():
            self._httpd.shutdown()
            owner.join(timeout=5)
        self._httpd.server_close()
        self._httpd.close_open_connections()

    def __enter__(self) -> SandboxServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- scripting ---

    def program(self, responses: Iterable[dict[str, Any]]) -> None:
        """Queue canned answers, used one per track request (FIFO) before normal validation.

        Keys: ``status`` (HTTP, default 200), ``code`` (default 0), ``message``, ``delay``
        (seconds, instead of the latency), ``body`` (raw text sent instead of the JSON
        envelope), ``drop`` (close the connection without answering).
        """
        checked = [_check_script(item, index) for index, item in enumerate(responses)]
        with self._lock:
            self._queue.extend(checked)

    def reject_events(
        self, event_ids: Iterable[str], reason: str = "properties.value: Not a valid number."
    ) -> None:
        """Answer 40002 to every request carrying one of ``event_ids``, until :meth:`reset`.

        As TikTok does with a batch holding one invalid event, the whole request is refused
        and the message names the first such event by its index: ``data.3.<reason>``.
        """
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"reason must be a non-empty string, got {reason!r}")
        ids = [event_ids] if isinstance(event_ids, str) else list(event_ids)
        for event_id in ids:
            if not isinstance(event_id, str) or not event_id:
                raise ValueError(f"event_ids must be non-empty strings, got {event_id!r}")
        with self._lock:
            self._rejected.update(dict.fromkeys(ids, reason))

    def set_latency(self, seconds: float) -> None:
        """Delay every later answer (not a scripted one that has its own ``delay``)."""
        seconds = _check_delay(seconds, "latency")
        with self._lock:
            self._latency = seconds

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    def set_body_limit(self, max_body_bytes: int | None) -> None:
        """Refuse later track requests whose body is longer than ``max_body_bytes`` with HTTP
        413 and an HTML page, as a proxy does; None lifts the limit."""
        limit = _check_body_limit(max_body_bytes)
        with self._lock:
            self._body_limit = limit

    @property
    def body_limit(self) -> int | None:
        with self._lock:
            return self._body_limit

    def reset(self) -> None:
        """Forget requests, pixel calls (the store's too), queued answers and rejections;
        reset the latency and the body limit."""
        with self._lock:
            self._records.clear()
            self._pixel_calls.clear()
            self._queue.clear()
            self._rejected.clear()
            self._latency = self._initial_latency
            self._body_limit = self._initial_body_limit
            if self._store is not None:
                self._store.write_text("")

    # --- the store ---

    def _load_store(self) -> None:
        """What an earlier run recorded; a line cut short by a crash is skipped."""
        assert self._store is not None
        self._store.parent.mkdir(parents=True, exist_ok=True)
        self._store.touch()
        for line in self._store.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                kind, record = entry["kind"], entry["record"]
            except (ValueError, KeyError, TypeError):
                continue
            if kind == "request":
                self._records.append(record)
            elif kind == "pixel":
                self._pixel_calls.append(record)

    def _keep(self, kind: str, record: dict[str, Any]) -> None:
        """Append one record to the store (called with the lock held, so lines never mix)."""
        if self._store is None:
            return
        line = json.dumps({"kind": kind, "record": record}, separators=(",", ":"))
        with open(self._store, "a", encoding="utf-8") as store:
            store.write(line + "\n")

    # --- inspection ---

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Copies of the recorded track requests, oldest first."""
        with self._lock:
            return copy.deepcopy(self._records)

    @property
    def pending_responses(self) -> int:
        with self._lock:
            return len(self._queue)

    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted (HTTP 200, code 0) request, flattened, oldest first."""
        flattened = []
        for record in self.requests:
            answer = record["answer"]
            body = record["body"]
            if answer["status"] != 200 or answer["code"] != CODE_OK:
                continue
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                continue
            for item in body["data"]:
                if not isinstance(item, dict):
                    continue
                flattened.append(
                    {
                        "pixel": body.get("event_source_id"),
                        "event": item.get("event"),
                        "event_id": item.get("event_id"),
                        "test_event_code": body.get("test_event_code"),
                        "request_id": record["request_id"],
                        "received_at": record["received_at"],
                        "item": item,
                    }
                )
        return flattened

    def browser_events(self) -> list[dict[str, Any]]:
        """Copies of the pixel's track calls, oldest first."""
        with self._lock:
            calls = copy.deepcopy(self._pixel_calls)
        return [call for call in calls if call["method"] == "track"]

    def page_views(self) -> list[dict[str, Any]]:
        """Copies of the pixel's page calls (event "Pageview"), oldest first."""
        with self._lock:
            calls = copy.deepcopy(self._pixel_calls)
        return [call for call in calls if call["method"] == "page"]

    def merged(self) -> list[dict[str, Any]]:
        """What TikTok would count: one row per (pixel, event, event_id) seen by either lane.

        Repeats of a key, from one lane or both, are one event (``counted_as`` 1), as TikTok
        deduplicates them; events without an event_id each stay a row of their own. TikTok's
        time windows (5 minutes to merge, 48 hours to deduplicate) are not modelled: a sandbox
        run is far shorter. Rows are ordered by when they were first seen, oldest first.
        """
        rows: dict[Any, dict[str, Any]] = {}
        lanes = (("server", self.events()), ("browser", self.browser_events()))
        for lane, events in lanes:
            for index, event in enumerate(events):
                key = _merge_key(event) or (lane, index)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = {
                        "pixel": event.get("pixel"),
                        "event": event.get("event"),
                        "event_id": event.get("event_id"),
                        "server_count": 0,
                        "browser_count": 0,
                        "request_ids": [],
                        "first_seen": None,
                        "server_first_seen": None,
                        "browser_first_seen": None,
                    }
                row[f"{lane}_count"] += 1
                seen = event["received_at"]
                if row[f"{lane}_first_seen"] is None or seen < row[f"{lane}_first_seen"]:
                    row[f"{lane}_first_seen"] = seen
                if row["first_seen"] is None or seen < row["first_seen"]:
                    row["first_seen"] = seen
                request_id = event.get("request_id")
                if request_id and request_id not in row["request_ids"]:
                    row["request_ids"].append(request_id)
        for row in rows.values():
            row["lanes"] = [lane for lane, _ in lanes if row[f"{lane}_count"]]
            if row["server_count"] and row["browser_count"]:
                row["verdict"] = MERGED
            elif row["server_count"]:
                row["verdict"] = SERVER_ONLY
            else:
                row["verdict"] = BROWSER_ONLY
            row["counted_as"] = 1
        return sorted(rows.values(), key=lambda row: row["first_seen"])

    def events_for(self, event_id: str) -> list[dict[str, Any]]:
        """The accepted events carrying ``event_id``."""
        return [event for event in self.events() if event["event_id"] == event_id]

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], Any],
        timeout: float = 10.0,
        interval: float = 0.02,
    ) -> list[dict[str, Any]]:
        """Poll :attr:`requests` until ``predicate(requests)`` is truthy; return those requests.

        Raises ``TimeoutError`` describing what was received if it does not happen in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            requests = self.requests
            if predicate(requests):
                return requests
            if time.monotonic() >= deadline:
                name = getattr(predicate, "__name__", repr(predicate))
                seen = "\n".join(f"  #{i} {_describe(r)}" for i, r in enumerate(requests))
                raise TimeoutError(
                    f"TikTok sandbox: {name} not satisfied within {timeout}s; "
                    f"{len(requests)} request(s) recorded" + (f":\n{seen}" if seen else ".")
                )
            time.sleep(interval)

    # --- request handling (called on handler threads) ---

    def _expected_token(self, body: Any) -> str | None:
        """The token a track request must carry: its pixel's own, when tokens are per pixel."""
        if not self._tokens:
            return self._token
        pixel = body.get("event_source_id") if isinstance(body, dict) else None
        # A pixel without a token of its own falls back to ``token``; the pixel check refuses it.
        return self._tokens.get(pixel, self._token) if isinstance(pixel, str) else self._token

    def _secrets(self) -> list[str]:
        return [token for token in (self._token, *self._tokens.values()) if token]

    def _handle_track(self, handler: _Handler, path: str, raw_body: bytes) -> None:
        received_at = time.time()
        limit = self.body_limit
        if limit is not None and len(raw_body) > limit:
            self._refuse_as_too_large(handler, path, raw_body, received_at)
            return
        # Parsed once: validating a 1,000-event body is work enough.
        try:
            body = parsed = parse_body(raw_body)
        except ValueError:
            # validate_request parses it again, to word TikTok's error.
            body, parsed = None, NOT_PARSED
        verdict = validate_request(
            handler.headers,
            raw_body,
            expected_token=self._expected_token(body),
            allowed_pixels=self._pixels,
            now=received_at,
            parsed=parsed,
        )
        present, valid = token_status(handler.headers, self._expected_token(body))
        request_id = _new_request_id()

        with self._lock:
            script = self._queue.popleft() if self._queue else None
            delay = self._latency
            blamed = (
                _first_rejected(body, self._rejected)
                if script is None and verdict.code == CODE_OK and self._rejected
                else None
            )
            if blamed is not None:
                reason = self._rejected[body["data"][blamed]["event_id"]]
                answer = {
                    "status": 200,
                    "code": CODE_INVALID_PARAMETER,
                    "message": f"data.{blamed}.{reason}",
                }
            elif script is None:
                answer = {"status": 200, "code": verdict.code, "message": verdict.message}
            else:
                delay = float(script.get("delay", delay))
                answer = self._scripted_answer(script)
            self._record_post(
                handler,
                path,
                raw_body,
                received_at,
                request_id=request_id,
                body=body,
                token=(present, valid),
                answer=answer,
                scripted=script is not None,
                validation={"code": verdict.code, "message": verdict.message},
            )

        if delay > 0 and self._stopping.wait(delay):
            handler.close_connection = True
            return
        if script is not None and script.get("drop"):
            # Like a crash: the connection ends with no status line at all.
            handler.close_connection = True
            return
        if script is not None and "body" in script:
            handler.send_bytes(answer["status"], script["body"].encode("utf-8"))
            return
        handler.send_json(
            answer["status"],
            {
                "code": answer["code"],
                "message": answer["message"],
                "request_id": request_id,
                "data": {},
            },
        )

    def _record_post(
        self, handler, path, raw_body, received_at, *, token, validation, **fields
    ) -> None:
        """Keep one received POST and what it was answered (under ``self._lock``)."""
        present, valid = token
        self._records.append(
            {
                "request_id": fields.pop("request_id"),
                "received_at": received_at,
                "method": "POST",
                "path": path,
                "headers": _recordable_headers(handler.headers, self._secrets()),
                "access_token_present": present,
                "access_token_valid": valid,
                "body": fields.pop("body"),
                "raw_body_size": len(raw_body),
                "answer": fields.pop("answer"),
                "scripted": fields.pop("scripted"),
                **fields,
                "validation": validation,
            }
        )
        self._keep("request", self._records[-1])

    def _refuse_as_too_large(
        self, handler: _Handler, path: str, raw_body: bytes, received_at: float
    ) -> None:
        """Answer as a proxy over its body limit does: at once, HTTP 413, its own HTML page,
        and the connection closed. The body was read whole first, so the client gets to read
        the answer (nginx too reads on for a while before closing)."""
        try:
            body = parse_body(raw_body)
        except ValueError:
            body = None
        present, valid = token_status(handler.headers, self._expected_token(body))
        with self._lock:
            self._record_post(
                handler,
                path,
                raw_body,
                received_at,
                request_id=_new_request_id(),
                body=body,
                token=(present, valid),
                answer={
                    "status": HTTPStatus.REQUEST_ENTITY_TOO_LARGE.value,
                    "code": None,
                    "message": PROXY_TOO_LARGE_PAGE.decode(),
                },
                scripted=False,
                validation=None,
                refused=REFUSED_BY_BODY_LIMIT,
            )
        handler.close_connection = True
        handler.send_bytes(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, PROXY_TOO_LARGE_PAGE, content_type="text/html"
        )

    def _handle_pixel(self, handler: _Handler, method: str, raw_body: bytes) -> None:
        cors = [("Access-Control-Allow-Origin", "*")]
        if method != "POST":
            handler.send_json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"ok": False, "error": f"{method} not allowed on {PIXEL_EVENTS_PATH}; use POST."},
                extra_headers=[*cors, ("Allow", "POST, OPTIONS")],
            )
            return
        try:
            call = _check_pixel_call(parse_body(raw_body))
        except ValueError as exc:
            handler.send_json(
                HTTPStatus.BAD_REQUEST,
                {"ok": False, "error": f"pixel call refused: {exc}"},
                extra_headers=cors,
            )
            return
        call["received_at"] = time.time()
        with self._lock:
            self._pixel_calls.append(call)
            self._keep("pixel", call)
        handler.send_empty(HTTPStatus.NO_CONTENT, cors)

    @staticmethod
    def _scripted_answer(script: dict[str, Any]) -> dict[str, Any]:
        if script.get("drop"):
            return {"status": None, "code": None, "message": "connection dropped"}
        status = script.get("status", 200)
        if "body" in script:
            # The client cannot read a code out of a raw body, so none is recorded.
            return {"status": status, "code": None, "message": script["body"]}
        code = script.get("code", CODE_OK)
        message = script.get("message", _default_message(status, code))
        return {"status": status, "code": code, "message": message}

    def _handle_control(
        self, handler: _Handler, method: str, path: str, query: str, raw_body: bytes
    ) -> None:
        action = path[len(CONTROL_PREFIX) :].strip("/")
        if action == "clear" and method == "POST":
            # The page's "Clear" button: a form post, answered with the page again.
            self.reset()
            handler.send_empty(HTTPStatus.SEE_OTHER, [("Location", CONTROL_PREFIX)])
            return
        if action == "" and method == "GET":
            handler.send_bytes(
                HTTPStatus.OK,
                self.render_page().encode("utf-8"),
                content_type="text/html; charset=utf-8",
                extra_headers=[("Cache-Control", "no-store")],
            )
            return
        routes: dict[tuple[str, str], Callable[[Any, dict[str, list[str]]], Any]] = {
            ("GET", "health"): lambda _, __: {
                "ok": True,
                "url": self.url,
                "events_url": self.events_url,
            },
            ("GET", "requests"): lambda _, __: self.requests,
            ("GET", "events"): self._control_events,
            ("GET", "browser-events"): lambda _, __: self.browser_events(),
            ("GET", "page-views"): lambda _, __: self.page_views(),
            ("GET", "merged"): lambda _, __: self.merged(),
            ("POST", "program"): self._control_program,
            ("POST", "latency"): self._control_latency,
            ("POST", "body-limit"): self._control_body_limit,
            ("POST", "reset"): self._control_reset,
        }
        route = routes.get((method, action))
        if route is None:
            if any(name == action for _, name in routes):
                allowed = ", ".join(m for m, name in routes if name == action)
                handler.send_json(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    {"ok": False, "error": f"{method} not allowed on {path}; use {allowed}."},
                    extra_headers=[("Allow", allowed)],
                )
            else:
                handler._not_found(path)
            return
        try:
            payload = parse_body(raw_body) if raw_body.strip() else None
            result = route(payload, parse_qs(query))
        except ValueError as exc:
            handler.send_json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": str(exc)})
            return
        handler.send_json(HTTPStatus.OK, result)

    def _control_events(self, _: Any, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        if "event_id" in query:
            return self.events_for(query["event_id"][0])
        return self.events()

    def _control_program(self, payload: Any, _: Any) -> dict[str, Any]:
        if not isinstance(payload, list):
            raise ValueError("POST /sandbox/program expects a JSON list of responses")
        self.program(payload)
        return {"ok": True, "pending": self.pending_responses}

    def _control_latency(self, payload: Any, _: Any) -> dict[str, Any]:
        if not isinstance(payload, dict) or "seconds" not in payload:
            raise ValueError('POST /sandbox/latency expects {"seconds": <number>}')
        self.set_latency(payload["seconds"])
        return {"ok": True, "seconds": self.latency}

    def _control_body_limit(self, payload: Any, _: Any) -> dict[str, Any]:
        if not isinstance(payload, dict) or "bytes" not in payload:
            raise ValueError('POST /sandbox/body-limit expects {"bytes": <number or null>}')
        self.set_body_limit(payload["bytes"])
        return {"ok": True, "bytes": self.body_limit}

    def _control_reset(self, _: Any, __: Any) -> dict[str, Any]:
        self.reset()
        return {"ok": True}

    def render_page(self) -> str:
        """The HTML overview at ``GET /sandbox/``: what TikTok counted, newest first."""
        esc = html.escape
        merged_rows = []
        for row in reversed(self.merged()):
            lanes = " + ".join(row["lanes"])
            merged_rows.append(
                "<tr>"
                f"<td>{esc(_fmt_time(row['first_seen']))}</td>"
                f"<td>{esc(str(row['pixel']))}</td>"
                f"<td>{esc(str(row['event']))}</td>"
                f"<td><code>{esc(str(row['event_id'] or '(none)'))}</code></td>"
                f"<td>{esc(lanes)}</td>"
                f"<td>{row['server_count']}</td>"
                f"<td>{row['browser_count']}</td>"
                f"<td{_verdict_attributes(row)}>{esc(row['verdict'])}</td>"
                f"<td>{row['counted_as']}</td>"
                "</tr>"
            )
        request_rows = []
        for record in reversed(self.requests[-_PAGE_REQUESTS:]):
            answer = record["answer"]
            body = record["body"]
            pixel = body.get("event_source_id") if isinstance(body, dict) else None
            items = body.get("data") if isinstance(body, dict) else None
            events = ", ".join(
                f"{item.get('event')}/{item.get('event_id')}"
                for item in (items if isinstance(items, list) else [])
                if isinstance(item, dict)
            )
            code = "" if answer["code"] is None else answer["code"]
            request_rows.append(
                "<tr>"
                f"<td>{esc(_fmt_time(record['received_at']))}</td>"
                f"<td><code>{esc(record['request_id'])}</code></td>"
                f"<td>{esc(str(pixel))}</td>"
                f"<td>{esc(events)}</td>"
                f"<td>{esc(str(answer['status']))}</td>"
                f"<td>{esc(str(code))}</td>"
                f"<td>{esc(str(answer['message']))}</td>"
                "</tr>"
            )
        empty = '<tr><td colspan="{}">Nothing received yet.</td></tr>'
        return _PAGE_TEMPLATE.format(
            refresh=_PAGE_REFRESH_SECONDS,
            url=esc(self.url),
            merged="\n".join(merged_rows) or empty.format(9),
            requests="\n".join(request_rows) or empty.format(7),
            shown=_PAGE_REQUESTS,
            kept=(
                f"Kept across restarts in <code>{esc(str(self._store))}</code>."
                if self._store is not None
                else "Kept in memory until the sandbox stops."
            ),
        )

    def __repr__(self) -> str:
        # Deliberately without the token.
        return f"<SandboxServer {self.url} pixels={sorted(self._pixels or ())}>"


def _verdict_attributes(row: dict[str, Any]) -> str:
    """The verdict cell's class (and title): merged, a purchase one lane alone sent, or any
    other event one lane sent, which is neutral.

    A purchase that one lane alone sent lacks the other lane's copy (or it is not in yet), so it
    is in the warning colour. Other events often come from one lane by design: many shops, the
    demo among them, send ViewContent and AddToCart from the pixel only.
    """
    if row["verdict"] == MERGED:
        return ' class="v-merged"'
    if row["event"] in PURCHASE_EVENT_NAMES:
        return ' class="v-warn" title="A purchase only one lane sent so far"'
    return ' class="v-single"'


# Self-contained on purpose: the demo must render with the network closed.
_PAGE_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>TikTok sandbox</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }}
th {{ background: #f2f2f2; }}
.v-merged {{ color: #176b2c; font-weight: bold; }}
.v-single {{ color: #555; }}
.v-warn {{ color: #8a5a00; font-weight: bold; }}
</style>
</head>
<body>
<h1>TikTok sandbox</h1>
<p>Listening on <code>{url}</code>. Refreshes every {refresh} s.
Events with the same pixel, name and event_id count once, whichever lane sent them.
Events a shop sends from one lane only (the demo's ViewContent and AddToCart come from the
pixel alone) are shown plain; a purchase one lane alone sent is in amber until the other
lane's copy arrives.</p>
<form method="post" action="/sandbox/clear"><button type="submit">Clear</button>
{kept}</form>
<h2>What TikTok counts (newest first)</h2>
<table>
<thead><tr><th>First seen</th><th>Pixel</th><th>Event</th><th>event_id</th><th>Lanes</th>
<th>Server</th><th>Browser</th><th>Verdict</th><th>Counted as</th></tr></thead>
<tbody>
{merged}
</tbody>
</table>
<h2>Events API requests received (last {shown}, newest first)</h2>
<table>
<thead><tr><th>Received</th><th>request_id</th><th>Pixel</th><th>Events</th>
<th>HTTP</th><th>Code</th><th>Message</th></tr></thead>
<tbody>
{requests}
</tbody>
</table>
</body>
</html>
"""
