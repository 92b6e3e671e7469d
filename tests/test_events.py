"""Tests of event names, event_ids, reading an order and building Events API payloads."""

import json
import math
import re
from dataclasses import FrozenInstanceError, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.factories import assert_rejected, make_order
from tiktok_tracking.adapters import OrderAdapter
from tiktok_tracking.events import (
    LEGACY_EVENTS,
    PURCHASE_EVENT_NAMES,
    STANDARD_EVENTS,
    BrowserContext,
    OrderFacts,
    build_event,
    build_request_body,
    encode_request_body,
    event_id_for,
    is_valid_event_name,
    order_properties,
    read_order,
    unix_seconds,
)
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.hashing import sha256_hex

LOWER_HEX_64 = re.compile(r"[0-9a-f]{64}")
EVENT_TIME = 1_700_000_000
VALID_EVENTS = sorted(STANDARD_EVENTS | LEGACY_EVENTS)
NON_PURCHASE_EVENTS = sorted(set(VALID_EVENTS) - PURCHASE_EVENT_NAMES)
HASHED_USER_KEYS = ("email", "phone", "external_id")

order_ids = st.one_of(
    st.integers(min_value=0, max_value=10**15).map(str),
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    st.uuids().map(str),
)
plain_suffixes = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
# Suffixes built to collide: an event name, alone or followed by another suffix.
collision_suffixes = st.builds(
    lambda event, rest: event.lower() if rest is None else f"{event.lower()}_{rest}",
    st.sampled_from(VALID_EVENTS),
    st.none() | st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
)
suffixes = st.none() | plain_suffixes | collision_suffixes
ascii_emails = st.from_regex(r"[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,20}\.[a-z]{2,6}", fullmatch=True)
amounts = st.decimals(
    min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False, places=2
)
contents = st.lists(
    st.fixed_dictionaries(
        {
            "content_id": st.one_of(
                st.integers(min_value=0, max_value=10**9),
                st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
            ),
            "content_name": st.none() | st.text(alphabet=st.characters(exclude_characters="@")),
            "quantity": st.integers(min_value=1, max_value=1000),
            "price": amounts,
        }
    ),
    max_size=5,
)
event_times = st.one_of(
    st.integers(min_value=0, max_value=10**10 - 1),
    st.floats(min_value=0, max_value=10**10 - 1, exclude_max=True),
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(timezone.utc),
    ),
)


def make_facts(**overrides):
    attributes = {
        "order_id": "1007",
        "value": Decimal("89.99"),
        "currency": "USD",
        "contents": (
            {
                "content_id": "SKU-123",
                "content_name": "Mug",
                "quantity": 1,
                "price": Decimal("89.99"),
            },
        ),
        "email_sha256": sha256_hex("jane@example.com"),
        "phone_sha256": sha256_hex("+14155550100"),
        "external_id_sha256": sha256_hex("42"),
        "country": "US",
    }
    attributes.update(overrides)
    return OrderFacts(**attributes)


# Event names ------------------------------------------------------------------------------


def test_event_name_sets_follow_the_may_2025_renaming():
    assert sorted(PURCHASE_EVENT_NAMES) == ["CompletePayment", "Purchase"]
    assert "Purchase" in STANDARD_EVENTS
    assert "Lead" in STANDARD_EVENTS
    assert {"CompletePayment", "SubmitForm"} <= LEGACY_EVENTS
    assert not STANDARD_EVENTS & LEGACY_EVENTS
    assert len(STANDARD_EVENTS) == 18


@pytest.mark.parametrize("name", ["Purchase", "CompletePayment", "InitiateCheckout", "SubmitForm"])
def test_is_valid_event_name_accepts_standard_and_legacy_names(name):
    assert is_valid_event_name(name)


@pytest.mark.parametrize("name", ["purchase", "PURCHASE", "Refund", "", " Purchase", None, 1])
def test_is_valid_event_name_rejects_other_names(name):
    assert not is_valid_event_name(name)


# read_order -------------------------------------------------------------------------------


def test_read_order_validates_and_hashes():
    facts = read_order(OrderAdapter(make_order()))
    assert facts == make_facts()
    assert isinstance(facts.contents, tuple)


def test_order_facts_keep_no_raw_email_or_phone():
    facts = read_order(OrderAdapter(make_order()))
    assert "jane" not in repr(facts).lower()
    assert "555" not in repr(facts)


def test_order_facts_are_frozen():
    with pytest.raises(FrozenInstanceError):
        make_facts().order_id = "other"


def test_read_order_leaves_unknown_match_keys_out():
    order = make_order(email="", phone="12", customer_id=None, country=None)
    facts = read_order(OrderAdapter(order))
    assert facts.email_sha256 is None
    assert facts.phone_sha256 is None
    assert facts.external_id_sha256 is None
    assert facts.country is None


def test_read_order_passes_digests_through():
    digest = sha256_hex("jane@example.com")
    facts = read_order(OrderAdapter(make_order(email=digest.upper())))
    assert facts.email_sha256 == digest


def junk_adapter(order, **answers):
    """An adapter whose overrides return ``answers`` unvalidated, as a careless shop's might."""
    overrides = {name: (lambda self, answer=answer: answer) for name, answer in answers.items()}
    return type("JunkAdapter", (OrderAdapter,), overrides)(order)


@pytest.mark.parametrize(
    ("answers", "field"),
    [
        ({"order_id": 10.5}, "order_id"),
        ({"order_id": ""}, "order_id"),
        ({"value": math.nan}, "value"),
        ({"value": "-1"}, "value"),
        ({"value": True}, "value"),
        ({"currency": "usdollars"}, "currency"),
        ({"contents": [{"content_id": "S", "quantity": 1, "price": math.inf}]}, "contents.0.price"),
        ({"contents": "SKU-1"}, "contents"),
    ],
)
def test_read_order_catches_junk_from_a_subclass(answers, field):
    assert_rejected(lambda: read_order(junk_adapter(make_order(), **answers)), field)


def test_read_order_keeps_the_purchase_when_the_country_is_unreadable():
    facts = read_order(junk_adapter(make_order(), country="Deutschland"))
    assert facts.country is None


# event_id_for -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "order_id", "suffix", "expected"),
    [
        ("Purchase", "1007", None, "order_1007"),
        ("CompletePayment", "1007", None, "order_1007"),
        ("Purchase", 1007, None, "order_1007"),
        ("InitiateCheckout", "1007", None, "order_1007_initiatecheckout"),
        ("AddPaymentInfo", " 1007 ", None, "order_1007_addpaymentinfo"),
        ("Purchase", "1007", "upsell_1", "order_1007_upsell_1"),
        ("Purchase", "1007", "renewal-2025-01", "order_1007_renewal-2025-01"),
        ("Subscribe", "1007", "renewal_3", "order_1007_subscribe_renewal_3"),
    ],
)
def test_event_id_for(event, order_id, suffix, expected):
    assert event_id_for(event, order_id, suffix) == expected


@pytest.mark.parametrize("suffix", ["", "has space", "a.b", "ü", "x" * 65, "1\n", 1, b"upsell"])
def test_event_id_for_rejects_bad_suffixes(suffix):
    assert_rejected(lambda: event_id_for("Purchase", "1007", suffix), "event_id_suffix")


@pytest.mark.parametrize("suffix", ["initiatecheckout", "AddToCart_1", "search"])
def test_event_id_for_rejects_suffixes_that_would_mimic_another_event(suffix):
    assert_rejected(lambda: event_id_for("Purchase", "1007", suffix), "event_id_suffix")


@pytest.mark.parametrize("event", ["purchase", "Refund", "", None])
def test_event_id_for_rejects_unknown_events(event):
    assert_rejected(lambda: event_id_for(event, "1007"), "event")


def test_event_id_for_rejects_bad_order_ids():
    assert_rejected(lambda: event_id_for("Purchase", ""), "order_id")
    assert_rejected(lambda: event_id_for("Purchase", None), "order_id")


def event_id_or_none(event, order_id, suffix):
    """The event_id, or None when the suffix is refused (refusing is how clashes are avoided)."""
    try:
        return event_id_for(event, order_id, suffix)
    except InvalidOrderData as error:
        assert error.field == "event_id_suffix"
        return None


@given(event=st.sampled_from(VALID_EVENTS), order_id=order_ids, suffix=suffixes)
def test_event_id_is_a_deterministic_string(event, order_id, suffix):
    event_id = event_id_or_none(event, order_id, suffix)
    if event_id is not None:
        assert isinstance(event_id, str)
        assert event_id == event_id_for(event, order_id, suffix)
        assert event_id.startswith(f"order_{order_id}")


@given(
    events=st.lists(st.sampled_from(VALID_EVENTS), min_size=2, max_size=2, unique=True),
    order_id=order_ids,
    suffix=suffixes,
)
def test_event_ids_differ_between_events_of_one_order(events, order_id, suffix):
    first, second = events
    if {first, second} == PURCHASE_EVENT_NAMES:
        # Both names of the purchase share its id, so a renamed pixel still deduplicates.
        assert event_id_for(first, order_id) == event_id_for(second, order_id)
        return
    ids = {event_id_or_none(event, order_id, suffix) for event in events}
    assert None in ids or len(ids) == 2


@given(
    event=st.sampled_from(VALID_EVENTS),
    order_id=order_ids,
    suffixes=st.lists(suffixes, min_size=2, max_size=2, unique=True),
)
def test_event_ids_differ_between_suffixes(event, order_id, suffixes):
    ids = [event_id_or_none(event, order_id, suffix) for suffix in suffixes]
    assert None in ids or ids[0] != ids[1]


@given(
    purchase=st.sampled_from(sorted(PURCHASE_EVENT_NAMES)),
    other=st.sampled_from(NON_PURCHASE_EVENTS),
    order_id=order_ids,
    purchase_suffix=suffixes,
    other_suffix=suffixes,
)
def test_purchase_ids_never_equal_other_event_ids(
    purchase, other, order_id, purchase_suffix, other_suffix
):
    purchase_id = event_id_or_none(purchase, order_id, purchase_suffix)
    other_id = event_id_or_none(other, order_id, other_suffix)
    assert purchase_id is None or other_id is None or purchase_id != other_id


# order_properties -------------------------------------------------------------------------


def test_order_properties():
    facts = make_facts(
        contents=(
            {"content_id": "SKU-1", "content_name": "Mug", "quantity": 2, "price": Decimal("4.50")},
            {"content_id": "SKU-2", "content_name": None, "quantity": 1, "price": Decimal("0")},
        ),
        value=Decimal("9.00"),
    )
    properties = order_properties(facts)
    assert properties == {
        "currency": "USD",
        "value": 9.0,
        "content_type": "product",
        "contents": [
            {"content_id": "SKU-1", "content_name": "Mug", "quantity": 2, "price": 4.5},
            {"content_id": "SKU-2", "quantity": 1, "price": 0.0},
        ],
        "order_id": "1007",
    }
    assert type(properties["value"]) is float
    assert json.loads(json.dumps(properties)) == properties


def test_order_properties_without_contents():
    properties = order_properties(make_facts(contents=()))
    assert properties["contents"] == []
    assert properties["content_type"] == "product"


# unix_seconds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        (EVENT_TIME, EVENT_TIME),
        (EVENT_TIME + 0.999, EVENT_TIME),
        (datetime.fromtimestamp(EVENT_TIME, tz=timezone.utc), EVENT_TIME),
        (datetime.fromtimestamp(EVENT_TIME, tz=timezone(timedelta(hours=-5))), EVENT_TIME),
        (datetime.fromtimestamp(EVENT_TIME + 0.5, tz=timezone.utc), EVENT_TIME),
    ],
)
def test_unix_seconds(event_time, expected):
    seconds = unix_seconds(event_time)
    assert seconds == expected
    assert type(seconds) is int


@pytest.mark.parametrize(
    "event_time",
    [
        datetime(2024, 1, 1),  # naive
        EVENT_TIME * 1000,  # milliseconds
        float(EVENT_TIME * 1000),
        -1,
        math.nan,
        math.inf,
        True,
        "1700000000",
        Decimal(EVENT_TIME),
        None,
    ],
)
def test_unix_seconds_rejects_anything_but_seconds(event_time):
    assert_rejected(lambda: unix_seconds(event_time), "event_time")


# build_event ------------------------------------------------------------------------------


def test_build_event_with_full_context():
    context = BrowserContext(
        ttclid="E.C.P.clickid",
        ttp="ttp-cookie",
        ip="203.0.113.1",
        user_agent="Mozilla/5.0",
        page_url="https://shop.example/checkout/thanks/",
        referrer="https://shop.example/checkout/",
        locale="en-US",
    )
    event = build_event(
        "Purchase",
        make_facts(),
        event_time=datetime.fromtimestamp(EVENT_TIME, tz=timezone.utc),
        context=context,
        limited_data_use=True,
    )
    assert event == {
        "event": "Purchase",
        "event_time": EVENT_TIME,
        "event_id": "order_1007",
        "user": {
            "email": sha256_hex("jane@example.com"),
            "phone": sha256_hex("+14155550100"),
            "external_id": sha256_hex("42"),
            "ttclid": "E.C.P.clickid",
            "ttp": "ttp-cookie",
            "ip": "203.0.113.1",
            "user_agent": "Mozilla/5.0",
            "locale": "en-US",
        },
        "properties": order_properties(make_facts()),
        "page": {
            "url": "https://shop.example/checkout/thanks/",
            "referrer": "https://shop.example/checkout/",
        },
        "limited_data_use": True,
    }


def test_build_event_leaves_unknown_user_and_page_fields_out():
    facts = make_facts(email_sha256=None, phone_sha256=None, external_id_sha256=None)
    event = build_event("InitiateCheckout", facts, event_time=EVENT_TIME)
    assert event["user"] == {}
    assert "page" not in event
    assert event["limited_data_use"] is False
    assert event["event_id"] == "order_1007_initiatecheckout"


def test_build_event_sends_only_the_known_page_fields():
    context = BrowserContext(referrer="https://ref.example/", ip="")
    event = build_event("Purchase", make_facts(), event_time=EVENT_TIME, context=context)
    assert event["page"] == {"referrer": "https://ref.example/"}
    assert "ip" not in event["user"]


def test_build_event_never_sends_country():
    event = build_event("Purchase", make_facts(country="US"), event_time=EVENT_TIME)
    assert "country" not in event["user"]


def test_build_event_hashes_raw_values_put_into_facts_by_hand():
    facts = make_facts(email_sha256=" Jane@Example.com", phone_sha256="0014155550100")
    user = build_event("Purchase", facts, event_time=EVENT_TIME)["user"]
    assert user["email"] == sha256_hex("jane@example.com")
    assert user["phone"] == sha256_hex("+14155550100")


def test_build_event_applies_the_suffix():
    event = build_event("Purchase", make_facts(), event_time=EVENT_TIME, event_id_suffix="upsell_1")
    assert event["event_id"] == "order_1007_upsell_1"


def test_build_event_rejects_unknown_events_and_bad_times():
    assert_rejected(lambda: build_event("Refund", make_facts(), event_time=EVENT_TIME), "event")
    assert_rejected(
        lambda: build_event("Purchase", make_facts(), event_time=EVENT_TIME * 1000), "event_time"
    )


@given(
    event=st.sampled_from(VALID_EVENTS),
    order_id=order_ids,
    value=amounts,
    currency=st.sampled_from(["USD", "EUR", "JPY", "KWD"]),
    items=contents,
    email=ascii_emails,
    phone=st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
    event_time=event_times,
    limited_data_use=st.booleans(),
)
def test_build_event_properties(
    event, order_id, value, currency, items, email, phone, event_time, limited_data_use
):
    order = make_order(
        order_id=order_id,
        total=value,
        currency=currency,
        items=[],
        email=email,
        phone=phone,
    )
    # Contents straight from the strategy, unvalidated: order_properties must still send strings.
    facts = replace(read_order(OrderAdapter(order)), contents=tuple(items))
    item = build_event(event, facts, event_time=event_time, limited_data_use=limited_data_use)
    dumped = json.dumps(item)

    assert type(item["event_time"]) is int
    assert 0 <= item["event_time"] < 10**10
    assert isinstance(item["event_id"], str)
    assert isinstance(item["properties"]["order_id"], str)
    assert item["properties"]["order_id"] == order_id
    assert all(isinstance(content["content_id"], str) for content in item["properties"]["contents"])
    for key in HASHED_USER_KEYS:
        assert key not in item["user"] or LOWER_HEX_64.fullmatch(item["user"][key])
    assert email not in dumped
    assert phone not in dumped
    # Values and currencies survive the trip to JSON.
    assert item["properties"]["currency"] == currency
    assert json.loads(dumped)["properties"]["value"] == float(value)
    assert item["limited_data_use"] is limited_data_use


# build_request_body -----------------------------------------------------------------------


def test_build_request_body():
    items = [build_event("Purchase", make_facts(), event_time=EVENT_TIME)]
    assert build_request_body("CPIXEL", items) == {
        "event_source": "web",
        "event_source_id": "CPIXEL",
        "data": items,
    }


def test_build_request_body_with_test_code_and_partner():
    body = build_request_body("CPIXEL", [], test_event_code="TEST123", partner_name="Django")
    assert body["test_event_code"] == "TEST123"
    assert body["partner_name"] == "Django"


@pytest.mark.parametrize(
    "options",
    [{}, {"test_event_code": "TEST123", "partner_name": "Django ünïcode"}],
)
def test_encoded_body_is_the_built_body_from_stored_json(options):
    items = [{"event": "Purchase", "event_id": "order_1", "properties": {"value": 12.5}}, {}]
    # As PostgreSQL prints jsonb: other spacing and key order, the same JSON.
    stored = ['{"event_id": "order_1", "event": "Purchase", "properties": {"value": 12.5}}', "{}"]
    data = encode_request_body("CPIXEL", stored, **options)
    assert isinstance(data, bytes)
    assert json.loads(data.decode("utf-8")) == build_request_body("CPIXEL", items, **options)


def test_build_request_body_leaves_empty_options_out():
    body = build_request_body("CPIXEL", [], test_event_code="", partner_name=None)
    assert set(body) == {"event_source", "event_source_id", "data"}


def test_read_order_takes_the_built_in_methods_answers_as_they_are_and_checks_overrides():
    calls = []

    class Counting(OrderAdapter):
        def currency(self):
            calls.append("currency")
            return "usd "  # an override's answer is checked (and cleaned) again

    facts = read_order(Counting(make_order()))
    assert facts.currency == "USD" and calls == ["currency"]
    assert read_order(OrderAdapter(make_order())) == read_order(
        type("Plain", (OrderAdapter,), {})(make_order())
    )
