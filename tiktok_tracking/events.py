"""Event names, event_ids and the Events API payloads built from an order: pure functions only."""

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tiktok_tracking.adapters import (
    OrderAdapter,
    clean_contents,
    clean_country,
    clean_currency,
    clean_order_id,
    clean_value,
)
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.hashing import hash_email, hash_external_id, hash_phone
from tiktok_tracking.standards import LEGACY_EVENTS, PURCHASE_EVENT_NAMES, STANDARD_EVENTS

CONTENT_TYPE = "product"

_EVENT_ID_SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A suffix starting with one of these would let a purchase's id ("order_7_addtocart_1") equal
# another event's id (AddToCart on order 7 with suffix "1").
_SUFFIX_FORBIDDEN_FIRST_SEGMENTS = frozenset(
    name.lower() for name in (STANDARD_EVENTS | LEGACY_EVENTS) - PURCHASE_EVENT_NAMES
)

# 10**10 seconds is the year 2286: a larger event_time is milliseconds, which TikTok would
# read as a date far in the future.
_EVENT_TIME_MAX_SECONDS = 10**10


def is_valid_event_name(name) -> bool:
    """Whether ``name`` is a current standard event or a legacy name TikTok still accepts."""
    return isinstance(name, str) and (name in STANDARD_EVENTS or name in LEGACY_EVENTS)


@dataclass(frozen=True)
class OrderFacts:
    """What TikTok is told about one order: validated values and hashed match keys only."""

    order_id: str
    value: Decimal
    currency: str
    contents: tuple[dict, ...] = ()
    email_sha256: str | None = None
    phone_sha256: str | None = None
    external_id_sha256: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class BrowserContext:
    """The visitor's browser details, captured at checkout and sent unhashed."""

    ttclid: str | None = None
    ttp: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    locale: str | None = None


def read_order(adapter, *, match_keys=True) -> OrderFacts:
    """The facts of ``adapter``'s order, each validated again and the match keys hashed.

    ``match_keys=False`` skips the customer's email, phone and id: the browser lane's events
    carry only the order's properties.
    """
    # A shop's subclass may return anything, so its answers pass the same validators again;
    # the built-in methods validate what they return, and are taken as they answer.
    order_id = _checked(adapter, "order_id", clean_order_id)
    value = _checked(adapter, "value", clean_value)
    currency = _checked(adapter, "currency", clean_currency)
    contents = tuple(_checked(adapter, "contents", clean_contents))
    country = _country_or_none(adapter)
    if match_keys:
        hashed = (
            hash_email(adapter.email()),
            # Customers type their number as they dial it at home: "(415) 555-2671" on a US order.
            hash_phone(adapter.phone(), country),
            hash_external_id(adapter.external_id()),
        )
    else:
        hashed = (None, None, None)
    return OrderFacts(order_id, value, currency, contents, *hashed, country)


def _checked(adapter, name, clean):
    """``adapter.<name>()``, through ``clean`` unless it is OrderAdapter's own method."""
    answer = getattr(adapter, name)()
    if getattr(type(adapter), name, None) is getattr(OrderAdapter, name):
        return answer
    return clean(answer)


def _country_or_none(adapter):
    # The country is not sent to TikTok; an unreadable one ("Germany", "USA") must not cost the
    # shop the purchase event. None leaves the decision to the consent policy's default.
    try:
        return clean_country(adapter.country())
    except InvalidOrderData:
        return None


# The event_id of a funnel event that belongs to no order (a product page's ViewContent):
# random, so it matches no server row.
RANDOM_EVENT_ID_PREFIX = "evt_"


def event_id_for(event: str, order_id: str, suffix: str | None = None) -> str:
    """The deterministic event_id both lanes send for ``event`` on ``order_id``.

    A purchase is ``order_<id>``, any other event ``order_<id>_<event lowercased>``, and a suffix
    (a second charge on the same order: upsell, renewal) is appended as ``_<suffix>``.
    """
    if not is_valid_event_name(event):
        raise InvalidOrderData("event", f"{event!r} is not a TikTok standard or legacy event name")
    event_id = f"order_{clean_order_id(order_id)}"
    if event not in PURCHASE_EVENT_NAMES:
        event_id = f"{event_id}_{event.lower()}"
    if suffix is None:
        return event_id
    if not isinstance(suffix, str) or _EVENT_ID_SUFFIX.fullmatch(suffix) is None:
        raise InvalidOrderData(
            "event_id_suffix", f"must be 1 to 64 of A-Z, a-z, 0-9, _ and -, got {suffix!r}"
        )
    if suffix.split("_", 1)[0].lower() in _SUFFIX_FORBIDDEN_FIRST_SEGMENTS:
        raise InvalidOrderData(
            "event_id_suffix",
            f"must not start with an event name ({suffix!r}): the id would clash with that event's",
        )
    return f"{event_id}_{suffix}"


def order_properties(facts: OrderFacts) -> dict:
    """The ``properties`` object of an order's event, identical for the browser and server lanes."""
    contents = []
    for item in facts.contents:
        content = {"content_id": str(item["content_id"])}
        if item.get("content_name"):
            content["content_name"] = str(item["content_name"])
        content["quantity"] = int(item["quantity"])
        content["price"] = float(item["price"])
        contents.append(content)
    return {
        "currency": facts.currency,
        "value": float(facts.value),
        "content_type": CONTENT_TYPE,
        "contents": contents,
        "order_id": str(facts.order_id),
    }


def unix_seconds(event_time) -> int:
    """``event_time`` (an aware datetime or Unix seconds) as whole Unix seconds."""
    if isinstance(event_time, datetime):
        if event_time.utcoffset() is None:
            raise InvalidOrderData("event_time", "must be a timezone-aware datetime")
        seconds = event_time.timestamp()
    elif isinstance(event_time, bool) or not isinstance(event_time, (int, float)):
        raise InvalidOrderData(
            "event_time", f"must be a datetime or Unix seconds, not {type(event_time).__name__}"
        )
    elif isinstance(event_time, float) and not math.isfinite(event_time):
        raise InvalidOrderData("event_time", f"must be finite, not {event_time!r}")
    else:
        seconds = event_time
    if seconds < 0:
        raise InvalidOrderData("event_time", f"must not be before 1970, got {seconds!r}")
    if seconds >= _EVENT_TIME_MAX_SECONDS:
        raise InvalidOrderData(
            "event_time", f"must be Unix seconds; {seconds!r} looks like milliseconds"
        )
    return int(seconds)


def _known(value) -> bool:
    return value is not None and str(value).strip() != ""


def build_event(
    event: str,
    facts: OrderFacts,
    *,
    event_time: int | float | datetime,
    context: BrowserContext | None = None,
    event_id_suffix: str | None = None,
    limited_data_use: bool = False,
) -> dict:
    """One item of the Events API ``data`` list for ``event`` on the order in ``facts``."""
    context = context or BrowserContext()
    # Hashing is idempotent on digests, and guards against a raw value put into OrderFacts by hand.
    user = {
        "email": hash_email(facts.email_sha256),
        "phone": hash_phone(facts.phone_sha256, facts.country),
        "external_id": hash_external_id(facts.external_id_sha256),
        # TikTok wants these raw: hashing them would make them useless for matching.
        "ttclid": context.ttclid,
        "ttp": context.ttp,
        "ip": context.ip,
        "user_agent": context.user_agent,
        "locale": context.locale,
    }
    page = {"url": context.page_url, "referrer": context.referrer}
    item = {
        "event": event,
        "event_time": unix_seconds(event_time),
        "event_id": event_id_for(event, facts.order_id, event_id_suffix),
        "user": {key: value for key, value in user.items() if _known(value)},
        "properties": order_properties(facts),
    }
    page = {key: value for key, value in page.items() if _known(value)}
    if page:
        item["page"] = page
    item["limited_data_use"] = bool(limited_data_use)
    return item


# The user fields TikTok matches on, in the bit order of TrackedEvent.match_keys.
MATCH_KEYS = ("email", "phone", "external_id", "ttclid", "ttp", "ip", "user_agent")


def match_key_mask(item: dict) -> int:
    """A bitmask of the match keys an Events API item carries (bit i = ``MATCH_KEYS[i]``)."""
    user = item.get("user") or {}
    return sum(1 << bit for bit, key in enumerate(MATCH_KEYS) if user.get(key))


def build_request_body(
    pixel_id: str,
    items: list[dict],
    *,
    test_event_code: str | None = None,
    partner_name: str | None = None,
) -> dict:
    """The Events API request body carrying ``items`` for the pixel ``pixel_id``."""
    body = {"event_source": "web", "event_source_id": str(pixel_id), "data": list(items)}
    if test_event_code:
        body["test_event_code"] = test_event_code
    if partner_name:
        body["partner_name"] = partner_name
    return body


def compact_json(value) -> str:
    """``value`` as the JSON text sent to TikTok: no spaces, UTF-8 characters kept as they are."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_request_body(
    pixel_id: str,
    encoded_items: list[str],
    *,
    test_event_code: str | None = None,
    partner_name: str | None = None,
) -> bytes:
    """The request body of :func:`build_request_body` as UTF-8 JSON, from items already encoded.

    The outbox keeps every item as JSON: splicing that text in spares decoding a thousand
    payloads only to encode them again.
    """
    head = build_request_body(
        pixel_id, [], test_event_code=test_event_code, partner_name=partner_name
    )
    del head["data"]
    opening = compact_json(head)[:-1]
    return f'{opening},"data":[{",".join(encoded_items)}]}}'.encode()
