"""Events API client: a keep-alive Session, batch POST, and the one place that reads answers."""

import contextvars
import dataclasses
import json
import socket
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

import requests
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from tiktok_tracking import __version__, conf
from tiktok_tracking.events import compact_json
from tiktok_tracking.pixels import configured_tokens
from tiktok_tracking.redaction import redact
from tiktok_tracking.standards import (
    CODE_INVALID_BATCH_SIZE,
    CODE_INVALID_PARAMETER,
    CODE_NO_PERMISSION,
    CODE_OK,
    CODE_PARTIAL_SUCCESS,
    CODE_TOO_MANY_REQUESTS,
    SERVER_ERROR_CODES,
)

DELIVERED = "delivered"
TRANSIENT = "transient"
PERMANENT = "permanent"

# The codes of a 200 answer, by what they mean for the events (docs/troubleshooting.md).
DELIVERED_CODES = frozenset({CODE_OK, CODE_PARTIAL_SUCCESS})
PERMANENT_CODES = frozenset({CODE_NO_PERMISSION, CODE_INVALID_PARAMETER, CODE_INVALID_BATCH_SIZE})
TRANSIENT_CODES = frozenset({CODE_TOO_MANY_REQUESTS, *SERVER_ERROR_CODES})
# A request refused for its size, by TikTok or by a proxy on the way (an nginx in front of a
# gateway answers its own HTML page): permanent for that request, not for its events, which a
# smaller request may carry (delivery halves it).
HTTP_PAYLOAD_TOO_LARGE = 413
TOO_LARGE_CODES = frozenset({CODE_INVALID_BATCH_SIZE})
# An answer the app cannot place (a code TikTok does not document, an answer too long to read)
# may be a new kind of outage or a new kind of refusal: retried, but only until a row has had
# this many attempts in all; then it fails with the answer kept.
UNKNOWN_ANSWER_MAX_ATTEMPTS = 5

NO_TOKEN_MESSAGE = "No ACCESS_TOKEN is configured for this pixel: nothing was sent."  # noqa: S105

# What is kept of an answer's text: enough to diagnose it in the admin, not enough to bloat
# the table (each event of a batch keeps a copy).
MAX_MESSAGE_LENGTH = 1000
CUT_MARKER = "… [cut]"
# The length of the request id columns.
MAX_REQUEST_ID_LENGTH = 128
# TikTok's answers run to a few hundred bytes; a longer one is not read whole.
MAX_ANSWER_BYTES = 64 * 1024
ANSWER_CHUNK_BYTES = 8 * 1024
# What the integer columns hold on every supported database.
MIN_STORABLE_CODE, MAX_STORABLE_CODE = -(2**31), 2**31 - 1
MAX_STORABLE_HTTP_STATUS = 32767

# The token of the request being answered, masked with the configured ones. Not passed as an
# argument: every frame an error report shows would then list it.
_request_token = contextvars.ContextVar("tiktok_request_token", default=None)


@dataclass(frozen=True)
class Outcome:
    """What one request came to: delivered, transient or permanent, with TikTok's own words.

    ``max_attempts``: a transient outcome that may stand for a permanent one (an answer the app
    cannot place) fails the rows that have had this many attempts.
    """

    kind: str
    http_status: int | None = None
    code: int | None = None
    message: str = ""
    request_id: str = ""
    event_count: int = 0
    duration_ms: int = 0
    max_attempts: int | None = None

    @property
    def delivered(self):
        return self.kind == DELIVERED

    @property
    def too_large(self):
        """Refused for the request's size: the same events in smaller requests may pass."""
        return self.kind == PERMANENT and (
            self.http_status == HTTP_PAYLOAD_TOO_LARGE or self.code in TOO_LARGE_CODES
        )


@sensitive_variables("secrets")
def classify_response(http_status, body, event_count=0, *, secrets=(), complete=True):
    """Turn an HTTP status and body into an Outcome.

    A 200 whose body carries a non-zero ``code`` is an error: TikTok reports most failures
    that way, and treating it as delivered would silently lose the event. ``complete`` False
    says ``body`` is only the start of an answer too long to read whole; ``secrets`` are
    tokens to mask besides the configured ones and the one the request carried.
    """
    text = _decoded(body)
    envelope = _parsed(text) if complete else None
    # Re-encoded, the text is the same whatever escapes TikTok used, so a token is found in it.
    readable = text if envelope is None else _compact(envelope)

    def outcome(kind, code=None, message=readable, max_attempts=None):
        return answer_outcome(
            kind,
            http_status,
            code,
            message,
            envelope.get("request_id") if isinstance(envelope, dict) else "",
            event_count=event_count,
            max_attempts=max_attempts,
            secrets=secrets,
        )

    if http_status >= 500 or http_status == 429:
        return outcome(TRANSIENT)
    if http_status == HTTP_PAYLOAD_TOO_LARGE:
        # Whatever the body says, if anything readable: a proxy's HTML page, or TikTok's JSON.
        code = envelope.get("code") if isinstance(envelope, dict) else None
        return outcome(PERMANENT, code, message=f"Refused as too large (HTTP 413): {readable}")
    if not complete:
        message = f"Answer longer than {MAX_ANSWER_BYTES // 1024} KiB, not read whole: {text}"
        if http_status >= 400:
            return outcome(PERMANENT, message=message)
        return outcome(TRANSIENT, message=message, max_attempts=UNKNOWN_ANSWER_MAX_ATTEMPTS)
    if not isinstance(envelope, dict) or "code" not in envelope:
        kind = TRANSIENT if http_status < 400 else PERMANENT
        return outcome(kind, message=f"Unreadable answer: {readable}")
    code = envelope["code"]
    if not storable_code(code):
        # No code TikTok documents, and none the column can hold: quoted in the message instead.
        message = f"Unknown code {_compact(code)}: {readable}"
        if http_status >= 400:
            return outcome(PERMANENT, message=message)
        return outcome(TRANSIENT, message=message, max_attempts=UNKNOWN_ANSWER_MAX_ATTEMPTS)
    message = _text(envelope.get("message"))
    if http_status >= 400:
        return outcome(TRANSIENT if code in TRANSIENT_CODES else PERMANENT, code, message)
    if code == CODE_PARTIAL_SUCCESS:
        # Which events were refused, if TikTok says at all, is in the rest of the body.
        return outcome(DELIVERED, code)
    if code in DELIVERED_CODES:
        return outcome(DELIVERED, code, message)
    if code in PERMANENT_CODES:
        return outcome(PERMANENT, code, message)
    if code in TRANSIENT_CODES:
        return outcome(TRANSIENT, code, message)
    return outcome(TRANSIENT, code, max_attempts=UNKNOWN_ANSWER_MAX_ATTEMPTS)


@sensitive_variables("secrets", "hidden")
def answer_outcome(
    kind,
    http_status=None,
    code=None,
    message="",
    request_id="",
    *,
    event_count=0,
    max_attempts=None,
    secrets=(),
):
    """An Outcome whose every field fits its column and holds no configured access token.

    The one place an answer's fields are bounded: whatever TikTok (or anything pretending to
    be it) sends, recording the outcome cannot fail on it.
    """
    hidden = (*secrets, _request_token.get(), *configured_tokens())
    request_id = redact(_text(request_id), hidden)
    request_id = "".join(char for char in request_id if char.isprintable())
    return Outcome(
        kind,
        http_status if _storable_http_status(http_status) else None,
        code if storable_code(code) else None,
        redact(message, hidden, limit=MAX_MESSAGE_LENGTH, marker=CUT_MARKER),
        request_id[:MAX_REQUEST_ID_LENGTH],
        event_count,
        max_attempts=max_attempts,
    )


def storable_code(code):
    """True if ``code`` is an integer the ``last_code`` and ``code`` columns can hold."""
    return (
        isinstance(code, int)
        and not isinstance(code, bool)
        and MIN_STORABLE_CODE <= code <= MAX_STORABLE_CODE
    )


def _storable_http_status(status):
    return (
        isinstance(status, int)
        and not isinstance(status, bool)
        and 0 <= status <= MAX_STORABLE_HTTP_STATUS
    )


def _decoded(body):
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return body or ""


def _parsed(text):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _compact(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _text(value):
    if value is None:
        return ""
    return value if isinstance(value, str) else _compact(value)


def read_bounded(response, limit=MAX_ANSWER_BYTES):
    """``(body, complete)``: the answer's body, or only its first ``limit`` bytes if longer."""
    body = bytearray()
    for chunk in response.iter_content(ANSWER_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), False
    return bytes(body), True


_exchange_in_progress = threading.local()


class RequestDeadline:
    """A total time limit on one HTTP exchange, whatever it is waiting for.

    requests' ``timeout`` bounds each wait on the socket, so an answer that trickles in a few
    bytes at a time never trips it. At the deadline this shuts down the socket carrying the
    exchange (the connections of :class:`DeadlineAdapter` report which one it is), which
    ends any wait at once.
    """

    def __init__(self, seconds):
        self.ends_at = time.monotonic() + seconds
        self.expired = False
        self._socket = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def remaining(self):
        return self.ends_at - time.monotonic()

    def __enter__(self):
        _exchange_in_progress.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        self._timer.cancel()
        _exchange_in_progress.deadline = None

    def watch(self, sock):
        with self._lock:
            self._socket = sock
            expired = self.expired
        if expired:
            _shut_down(sock)

    def expire(self):
        with self._lock:
            self.expired = True
            sock = self._socket
        if sock is not None:
            _shut_down(sock)


def _shut_down(sock):
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnection:
    """Tells the exchange's deadline, if any, which socket to shut down.

    The socket itself, not the connection: an answer that closes the connection takes the
    socket with it, and the connection forgets it while the body is still being read.
    """

    def connect(self):
        super().connect()
        # A deadline that passed while connecting ends the exchange now.
        _watch(self)

    def request(self, *args, **kwargs):
        _watch(self)
        return super().request(*args, **kwargs)


def _watch(connection):
    deadline = getattr(_exchange_in_progress, "deadline", None)
    if deadline is not None and connection.sock is not None:
        deadline.watch(connection.sock)


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


WATCHED_POOL_CLASSES = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, whose connections a :class:`RequestDeadline` can shut down."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(WATCHED_POOL_CLASSES)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # A SOCKS proxy brings connection classes of its own; they keep the per-read timeout.
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(WATCHED_POOL_CLASSES)
        return manager


class EventsApiClient:
    """Posts request bodies to the Events API over a keep-alive Session.

    ``access_token`` is the default for requests that bring none; with several pixels, each
    request brings its own pixel's token. ``timeout`` is the whole of one request: connecting,
    sending and reading the answer. A ``session`` of your own keeps its adapters, and with
    them only requests' per-read timeout, unless it mounts :class:`DeadlineAdapter`.
    """

    def __init__(self, api_url, access_token=None, *, timeout=10.0, session=None):
        self.api_url = api_url
        self._access_token = access_token
        self.timeout = timeout
        self.session = session or self.create_session()

    @classmethod
    def from_settings(cls, **kwargs):
        # No token here: delivery sends each pixel's requests with that pixel's token.
        return cls(conf.get("API_URL"), timeout=float(conf.get("TIMEOUT")), **kwargs)

    def __repr__(self):
        # Never the token: reprs end up in logs and tracebacks.
        return f"<EventsApiClient {self.api_url}>"

    def create_session(self):
        session = requests.Session()
        for prefix in ("https://", "http://"):
            session.mount(prefix, DeadlineAdapter())
        session.headers.update(
            {
                "User-Agent": (
                    f"django-tiktok-tracking/{__version__} {requests.utils.default_user_agent()}"
                ),
                "Content-Type": "application/json",
            }
        )
        return session

    @sensitive_variables("access_token")
    def send(self, body, access_token=None):
        """POST one request body (one pixel, up to BATCH_SIZE events); never raises on failure."""
        data = compact_json(body).encode("utf-8")
        return self.send_encoded(data, len(body.get("data", ())), access_token)

    # Error reports list each frame's variables: this one's token must show as masked.
    @sensitive_variables("access_token")
    def send_encoded(self, data, event_count, access_token=None):
        """POST a body already encoded as UTF-8 JSON carrying ``event_count`` events.

        Answered or not, it returns within ``timeout`` seconds (and the few milliseconds it
        takes to close the connection).
        """
        access_token = access_token or self._access_token
        if not access_token:
            # Nothing to ask TikTok: it would only answer 40001. Fixed in the settings, the
            # events can be resent.
            return Outcome(
                PERMANENT, message=NO_TOKEN_MESSAGE, event_count=event_count, duration_ms=0
            )
        started = time.monotonic()
        deadline = RequestDeadline(self.timeout)
        token_in_use = _request_token.set(access_token)
        try:
            with deadline:
                status, body, complete = self._exchange(data, access_token, deadline)
        except (requests.RequestException, OSError) as exc:
            if deadline.expired or isinstance(exc, requests.Timeout):
                outcome = answer_outcome(TRANSIENT, message=self.timed_out_message())
            else:
                # requests' texts quote URLs, which may carry anything: bounded and redacted.
                outcome = answer_outcome(TRANSIENT, message=f"{type(exc).__name__}: {exc}")
        else:
            if deadline.expired:
                # Whatever was read when the connection was shut down may be only part of it.
                outcome = answer_outcome(TRANSIENT, message=self.timed_out_message())
            else:
                outcome = classify_response(status, body, complete=complete)
        finally:
            _request_token.reset(token_in_use)
        duration_ms = int((time.monotonic() - started) * 1000)
        return dataclasses.replace(outcome, event_count=event_count, duration_ms=duration_ms)

    @sensitive_variables("access_token")
    def _exchange(self, data, access_token, deadline):
        """``(status, body, complete)`` of one POST, read as a stream so its size is bounded."""
        response = self.session.post(
            self.api_url,
            data=data,
            headers={"Access-Token": access_token},
            # Each wait on the socket; the deadline bounds their sum.
            timeout=max(deadline.remaining(), 0.001),
            stream=True,
        )
        with response:
            body, complete = read_bounded(response)
        return response.status_code, body, complete

    def timed_out_message(self):
        return f"Timed out after {self.timeout:g} s (TIMEOUT, the whole request)"

    def close(self):
        self.session.close()


def configured_client(**kwargs):
    """A client of the class EVENTS_API_CLIENT names, from the settings."""
    from django.utils.module_loading import import_string

    return import_string(conf.get("EVENTS_API_CLIENT")).from_settings(**kwargs)
