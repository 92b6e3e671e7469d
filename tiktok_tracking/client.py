"""Events API client: a keep-alive Session, batch POST, and the one place that reads answers."""

import dataclasses
import json
import time
from dataclasses import dataclass

import requests
from django.views.decorators.debug import sensitive_variables

from tiktok_tracking import __version__, conf
from tiktok_tracking.events import compact_json
from tiktok_tracking.exceptions import PermanentApiError, TransientApiError
from tiktok_tracking.standards import CODE_OK, CODE_TOO_MANY_REQUESTS

DELIVERED = "delivered"
TRANSIENT = "transient"
PERMANENT = "permanent"

TRANSIENT_CODES = frozenset({CODE_TOO_MANY_REQUESTS})

NO_TOKEN_MESSAGE = "No ACCESS_TOKEN is configured for this pixel: nothing was sent."  # noqa: S105

# Enough of an unexpected body to diagnose it in the admin, not enough to bloat the row.
MAX_KEPT_BODY = 2000


@dataclass(frozen=True)
class Outcome:
    """What one request came to: delivered, transient or permanent, with TikTok's own words."""

    kind: str
    http_status: int | None = None
    code: int | None = None
    message: str = ""
    request_id: str = ""
    event_count: int = 0
    duration_ms: int = 0

    @property
    def delivered(self):
        return self.kind == DELIVERED

    def raise_for_error(self):
        if self.kind == TRANSIENT:
            raise TransientApiError(self)
        if self.kind == PERMANENT:
            raise PermanentApiError(self)


def classify_response(http_status, body, event_count=0):
    """Turn an HTTP status and body into an Outcome.

    A 200 whose body carries a non-zero ``code`` is an error: TikTok reports most failures
    that way, and treating it as delivered would silently lose the event.
    """
    if http_status >= 500 or http_status == 429:
        return Outcome(TRANSIENT, http_status, None, _excerpt(body), "", event_count)
    try:
        envelope = json.loads(body)
    except (ValueError, TypeError):
        envelope = None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("code"), int):
        kind = TRANSIENT if http_status < 400 else PERMANENT
        message = f"Unreadable answer: {_excerpt(body)}"
        return Outcome(kind, http_status, None, message, "", event_count)
    code = envelope["code"]
    message = str(envelope.get("message") or "")
    request_id = str(envelope.get("request_id") or "")
    if http_status >= 400:
        kind = TRANSIENT if code in TRANSIENT_CODES else PERMANENT
    elif code == CODE_OK:
        kind = DELIVERED
    elif code in TRANSIENT_CODES:
        kind = TRANSIENT
    else:
        kind = PERMANENT
    return Outcome(kind, http_status, code, message, request_id, event_count)


def _excerpt(body):
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    body = body or ""
    return body if len(body) <= MAX_KEPT_BODY else body[:MAX_KEPT_BODY] + "..."


class EventsApiClient:
    """Posts request bodies to the Events API over a keep-alive Session.

    ``access_token`` is the default for requests that bring none; with several pixels, each
    request brings its own pixel's token.
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
        """POST a body already encoded as UTF-8 JSON carrying ``event_count`` events."""
        access_token = access_token or self._access_token
        if not access_token:
            # Nothing to ask TikTok: it would only answer 40001. Fixed in the settings, the
            # events can be resent.
            return Outcome(
                PERMANENT, message=NO_TOKEN_MESSAGE, event_count=event_count, duration_ms=0
            )
        started = time.monotonic()
        try:
            response = self.session.post(
                self.api_url,
                data=data,
                headers={"Access-Token": access_token},
                timeout=self.timeout,
            )
        except requests.Timeout:
            outcome = Outcome(TRANSIENT, None, None, f"Timed out after {self.timeout}s")
        except requests.RequestException as exc:
            outcome = Outcome(TRANSIENT, None, None, f"{type(exc).__name__}: {exc}")
        else:
            outcome = classify_response(response.status_code, response.content)
        duration_ms = int((time.monotonic() - started) * 1000)
        return dataclasses.replace(outcome, event_count=event_count, duration_ms=duration_ms)

    def close(self):
        self.session.close()
