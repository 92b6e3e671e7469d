"""Helpers for a shop's own tests: TikTok replaced by a recorder, and assertions on both lanes.

Like Django's locmem mail backend: with ``EVENTS_API_CLIENT`` set to ``RECORDING_CLIENT``
every request the server lane would send to the Events API is kept in ``sent`` instead, and
answered as TikTok answers an accepted batch. The assertions read the outbox (what the server
lane recorded) and ``sent`` (what it would have sent), naming what they found when they fail::

    TIKTOK_TRACKING = {..., "EVENTS_API_CLIENT": "tiktok_tracking.testing.RecordingClient"}

    def test_paying_tracks_the_purchase(client):
        order = place_and_pay_order(client)
        deliver_now()
        row = assert_purchase_tracked(order, value=Decimal("89.99"), currency="EUR")
        assert thank_you_event_ids(client.get(f"/thanks/{order.number}/")) == [row.event_id]

With pytest, the ``tiktok_recorder`` fixture (this package's pytest plugin) sets the client and
empties ``sent`` around each test; elsewhere, ``with recording():`` does the same for a block.
"""

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from tiktok_tracking.client import DELIVERED, EventsApiClient, Outcome
from tiktok_tracking.conf import SETTING_NAME

RECORDING_CLIENT = "tiktok_tracking.testing.RecordingClient"

# Every request the recording client was given since the last reset(), oldest first.
sent = []


@dataclass(frozen=True)
class SentRequest:
    """One request the server lane would have POSTed to the Events API."""

    body: dict
    # Whether the request carried an access token (never the token itself).
    had_token: bool
    events: list = field(default_factory=list)

    @property
    def pixel_code(self):
        return self.body.get("event_source_id")


class RecordingClient(EventsApiClient):
    """A stand-in for ``EventsApiClient`` that records each request and accepts it: the same
    settings and the same encoding of the body, no session and no network."""

    def create_session(self):
        return None

    def __repr__(self):
        return f"<RecordingClient: {len(sent)} request(s) recorded>"

    def send_encoded(self, data, event_count, access_token=None):
        body = json.loads(data)
        sent.append(
            SentRequest(
                body=body,
                had_token=bool(access_token or self._access_token),
                events=list(body.get("data", ())),
            )
        )
        return Outcome(
            DELIVERED,
            http_status=200,
            code=0,
            message="OK",
            request_id=f"recorded-{len(sent)}",
            event_count=event_count,
        )

    def close(self):
        pass


def reset():
    """Forget every recorded request."""
    sent.clear()


@contextmanager
def recording():
    """The recording client in force for a block (for unittest-style tests), its record
    emptied first: ``with recording() as recorder: ...``."""
    from django.conf import settings
    from django.test import override_settings

    tracking = {**(getattr(settings, SETTING_NAME, None) or {})}
    tracking["EVENTS_API_CLIENT"] = RECORDING_CLIENT
    reset()
    with override_settings(**{SETTING_NAME: tracking}):
        yield Recorder()


class Recorder:
    """The helpers of this module as one object, as the ``tiktok_recorder`` fixture gives it."""

    @property
    def sent(self):
        return sent

    def events(self, event=None):
        return sent_events(event)

    def deliver(self):
        return deliver_now()

    def tracked(self, order=None, event=None):
        return tracked_events(order, event)

    def assert_purchase_tracked(self, order, **expected):
        return assert_purchase_tracked(order, **expected)

    def assert_nothing_sent(self):
        assert_nothing_sent()


def sent_events(event=None):
    """The events of every recorded request, in order; only those named ``event`` if given."""
    return [e for request in sent for e in request.events if event in (None, e.get("event"))]


def deliver_now():
    """Deliver what the outbox holds now, in this process, through the configured client.

    A test's transaction never commits, so the task the app enqueues after commit never runs:
    this is the worker's work, done in place. Returns the delivery report.
    """
    from tiktok_tracking.delivery import deliver_due_events

    return deliver_due_events()


def _order_id(order):
    from tiktok_tracking.adapters import configured_adapter_class

    return str(configured_adapter_class()(order).order_id())


def tracked_events(order=None, event=None):
    """The outbox rows of ``order`` (read through ORDER_ADAPTER), or of every order, oldest
    first; only those named ``event`` if given."""
    from tiktok_tracking.models import TrackedEvent

    rows = TrackedEvent.objects.order_by("pk")
    if order is not None:
        rows = rows.filter(order_id=_order_id(order))
    if event is not None:
        rows = rows.filter(event=event)
    return rows


def assert_purchase_tracked(order, *, value=None, currency=None):
    """The outbox row of ``order``'s purchase, once its lanes may send it (not suppressed, not
    failed), with ``value`` and ``currency`` as given; AssertionError naming what was found.
    If the purchase was delivered through the recording client, the request must carry the
    same value, currency and event_id."""
    from tiktok_tracking import conf
    from tiktok_tracking.models import TrackedEvent

    order_id = _order_id(order)
    purchase = conf.get("PURCHASE_EVENT")
    rows = list(tracked_events(order, event=purchase))
    if not rows:
        recorded = [f"{row.event} {row.event_id}" for row in tracked_events(order)]
        raise AssertionError(
            f"No {purchase} event recorded for order {order_id}; its events: "
            f"{recorded or 'none'}. Did the shop send payment_completed, and did it commit?"
        )
    row = rows[0]
    if row.status in (TrackedEvent.Status.SUPPRESSED, TrackedEvent.Status.FAILED):
        reason = row.suppressed_reason or row.last_error
        raise AssertionError(f"The {purchase} of order {order_id} is {row.status}: {reason}")
    properties = row.payload.get("properties", {})
    _compare(order_id, "value", properties.get("value"), value, Decimal)
    _compare(order_id, "currency", properties.get("currency"), currency, str)
    for event in sent_events(purchase):
        if event.get("event_id") == row.event_id and event.get("properties") != properties:
            raise AssertionError(
                f"Order {order_id}: the request sent {event.get('properties')}, the outbox "
                f"holds {properties}"
            )
    return row


def _compare(order_id, name, actual, expected, as_type):
    if expected is None:
        return
    if actual is None or as_type(str(actual)) != as_type(str(expected)):
        raise AssertionError(f"Order {order_id}: purchase {name} is {actual}, not {expected}")


def assert_nothing_sent():
    """No request went to the Events API through the recording client."""
    if sent:
        events = [f"{e.get('event')} {e.get('event_id')}" for e in sent_events()]
        raise AssertionError(f"{len(sent)} request(s) sent to TikTok: {events}")


_decoder = json.JSONDecoder()


def script_calls(html, callee):
    """The JSON arguments of every ``callee(...)`` call in a page's scripts, decoded, in page
    order: ``script_calls(html, "ttq.track")`` is what the browser lane tracks."""
    if hasattr(html, "content"):  # a test client's response
        html = html.content.decode()
    calls = []
    for match in re.finditer(re.escape(callee) + r"\(", html):
        position, arguments = match.end(), []
        while True:
            position = _skip_space(html, position)
            if html[position] == ")":
                break
            value, position = _decoder.raw_decode(html, position)
            arguments.append(value)
            position = _skip_space(html, position)
            if html[position] == ",":
                position += 1
        calls.append(arguments)
    return calls


def _skip_space(text, position):
    while text[position].isspace():
        position += 1
    return position


def rendered_events(html):
    """``[(event, properties, options)]`` of every ``ttq.track(...)`` a page renders (the
    browser lane), in page order."""
    # A call without properties or options reads as one with them empty.
    return [tuple([*arguments, {}, {}][:3]) for arguments in script_calls(html, "ttq.track")]


def thank_you_event_ids(html, event=None):
    """The event_ids the page's pixel tracks ``event`` with (the purchase by default): the
    browser lane's half of deduplication."""
    if event is None:
        from tiktok_tracking import conf

        event = conf.get("PURCHASE_EVENT")
    return [options.get("event_id") for name, _p, options in rendered_events(html) if name == event]
