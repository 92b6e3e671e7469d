"""Hostile input: whatever a shop's order holds, the app sends a valid event or names the field.

Each property runs 1,000 examples. The reference for "valid" is the sandbox's strict
validator of the Events API (tiktok_tracking/sandbox/validation.py), not the app's own idea
of it.
"""

import json
import re
import time
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiktok_tracking.adapters import (
    OrderAdapter,
    clean_currency,
    clean_order_id,
    clean_value,
)
from tiktok_tracking.events import build_event, build_request_body, event_id_for, read_order
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.hashing import hash_email, hash_external_id, hash_phone, normalize_phone
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.recording import record_order_event
from tiktok_tracking.sandbox.validation import validate_request
from tiktok_tracking.standards import ISO_4217_CODES

HOSTILE = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PIXEL = "CHOSTILEPIXEL01"
TOKEN = "hostile-token-0123456789"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A "+", a country code (never starting with 0) and at most 15 digits in all.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")

# Text as shops and attackers produce it: unicode, control characters, blanks, huge strings.
hostile_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=5),
    st.sampled_from(["", " ", "\x00", "\u2028", "NaN", "-0", "1e999", "Infinity", "<script>"]),
    st.text(min_size=1000, max_size=3000),
)
hostile_numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("sNaN"), Decimal("-0"), 10**30, -1, True, False]),
)
hostile_values = st.one_of(
    hostile_text, hostile_numbers, st.none(), st.binary(max_size=8), st.lists(st.integers())
)
phones = st.one_of(
    hostile_text,
    st.from_regex(r"\+?[0-9 ()\-.]{0,24}", fullmatch=True),
    st.sampled_from(["+44 20 7946 0958", "(202) 555-0143", "0044 20 7946 0958", "07700 900123"]),
)


def lines():
    line = st.builds(
        SimpleNamespace,
        sku=hostile_values,
        name=hostile_values,
        quantity=st.one_of(hostile_numbers, st.integers(min_value=1, max_value=5)),
        price=st.one_of(hostile_numbers, st.decimals(min_value=0, max_value=1000, places=2)),
    )
    return st.one_of(st.lists(line, max_size=4), hostile_values)


# Half well-formed, half hostile, so that both the accepted and the refused paths get examples.
orders = st.builds(
    SimpleNamespace,
    order_id=st.one_of(st.from_regex(r"[A-Z0-9-]{1,20}", fullmatch=True), hostile_values),
    total=st.one_of(st.decimals(min_value=0, max_value=10**6, places=2), hostile_numbers),
    currency=st.one_of(st.sampled_from(sorted(ISO_4217_CODES)), hostile_values),
    items=lines(),
    email=st.one_of(st.emails(), hostile_values),
    phone=phones,
    customer_id=hostile_values,
    country=st.one_of(st.sampled_from(["US", "de", "", None]), hostile_values),
)


def api_verdict(item):
    """What the sandbox, standing in for TikTok, answers to one request carrying ``item``."""
    raw = json.dumps(build_request_body(PIXEL, [item]), allow_nan=False).encode("utf-8")
    headers = {"Access-Token": TOKEN, "Content-Type": "application/json"}
    return validate_request(
        headers, raw, expected_token=TOKEN, allowed_pixels=None, now=time.time()
    )


@HOSTILE
@given(order=orders)
def test_any_order_gives_an_event_tiktok_accepts_or_an_error_naming_the_field(order):
    try:
        facts = read_order(OrderAdapter(order))
    except InvalidOrderData as exc:
        assert exc.field and str(exc)
        return
    item = build_event("Purchase", facts, event_time=time.time())
    verdict = api_verdict(item)
    assert verdict.code == 0, verdict.message


@HOSTILE
@given(value=hostile_values)
def test_validators_answer_or_name_the_field(value):
    for clean, check in (
        (clean_value, lambda amount: amount.is_finite() and 0 <= amount <= 10**12),
        (clean_currency, lambda code: code in ISO_4217_CODES),
        (
            clean_order_id,
            lambda order_id: 0 < len(order_id) <= 128 and order_id == order_id.strip(),
        ),
    ):
        try:
            cleaned = clean(value)
        except InvalidOrderData as exc:
            assert exc.field
        else:
            assert check(cleaned), (clean.__name__, value, cleaned)


@HOSTILE
@given(value=st.one_of(hostile_values, phones, st.emails()))
def test_hashing_never_raises_and_gives_a_digest_or_nothing(value):
    for hash_key in (hash_email, hash_phone, hash_external_id):
        digest = hash_key(value)
        assert digest is None or SHA256_HEX.fullmatch(digest)


@HOSTILE
@given(phone=phones)
def test_phone_numbers_normalise_to_e164_or_nothing(phone):
    normalized = normalize_phone(phone)
    # What comes out is possible by phonenumbers' reckoning, and reads back as itself.
    assert normalized is None or (
        E164.fullmatch(normalized) and normalize_phone(normalized) == normalized
    )


@HOSTILE
@given(order_id=hostile_values, suffix=st.one_of(st.none(), hostile_values))
def test_event_ids_are_safe_strings_or_refused(order_id, suffix):
    try:
        event_id = event_id_for("Purchase", order_id, suffix)
    except InvalidOrderData as exc:
        assert exc.field in ("order_id", "event_id_suffix")
    else:
        assert event_id.startswith("order_") and event_id == event_id.strip()
        assert not any(ord(char) < 32 for char in event_id)


@pytest.fixture
def default_adapter(settings):
    # The hostile orders have the default adapter's attribute names, not the test shop's.
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "ORDER_ADAPTER": "tiktok_tracking.adapters.OrderAdapter",
    }


@pytest.mark.django_db
@HOSTILE
@given(order=orders)
def test_bad_order_data_never_breaks_the_checkout_and_is_recorded_with_the_reason(
    default_adapter, order
):
    with transaction.atomic():
        [row] = record_order_event("Purchase", order)
        # The payment's own work goes on in the same transaction.
        assert TrackedEvent.objects.filter(pk=row.pk).exists()
        if row.status == TrackedEvent.Status.FAILED:
            assert row.last_error.startswith("Invalid order data: ")
        else:
            assert api_verdict(row.payload).code == 0
        transaction.set_rollback(True)


# The consent and receipt endpoints ------------------------------------------------------------

form_values = st.one_of(hostile_text, st.sampled_from(["granted", "denied", "GRANTED", ""]))
raw_bodies = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda token: json.dumps({"token": token}).encode(), hostile_values.map(str)),
    st.builds(lambda value: json.dumps(value).encode(), st.lists(hostile_text, max_size=3)),
    st.just(b"x" * 5000),
)
content_types = st.sampled_from(
    ["text/plain", "application/json", "application/x-www-form-urlencoded", "multipart/form-data"]
)


@pytest.mark.django_db
@HOSTILE
@given(status=form_values, source=form_values, country=st.sampled_from(["DE", "US", "ZZ", ""]))
def test_consent_endpoint_answers_4xx_to_anything_malformed_and_writes_nothing(
    status, source, country
):
    from django.test import Client

    from tiktok_tracking.models import ConsentRecord

    client = Client()
    client.cookies["country"] = country
    before = ConsentRecord.objects.count()
    response = client.post("/tiktok/consent/", {"status": status, "source": source})
    written = ConsentRecord.objects.count() - before
    if status in ("granted", "denied"):
        assert (response.status_code, written) == (200, 1)
        assert len(ConsentRecord.objects.latest("pk").source) <= 32
    else:
        assert (response.status_code, written) == (400, 0)


@pytest.mark.django_db
@HOSTILE
@given(body=raw_bodies, content_type=content_types)
def test_receipt_endpoint_answers_4xx_to_anything_forged_or_malformed_and_writes_nothing(
    body, content_type
):
    from django.test import Client

    from tiktok_tracking.models import BrowserReceipt

    client = Client()
    client.cookies["country"] = "US"
    response = client.generic("POST", "/tiktok/receipt/", body, content_type=content_type)
    assert 400 <= response.status_code < 500, response.content
    assert not BrowserReceipt.objects.exists()
