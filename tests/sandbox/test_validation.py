"""The sandbox's request validation, rule by rule, against the Events API's v1.3 wire format."""

import copy
import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiktok_tracking.sandbox.validation import (
    ALLOWED_EVENTS,
    CODE_INVALID_PARAMETER,
    CODE_NO_PERMISSION,
    ISO_4217_CODES,
    LEGACY_EVENTS,
    MAX_AGE_SECONDS,
    MAX_FUTURE_SECONDS,
    OK,
    STANDARD_EVENTS,
    Verdict,
    validate_payload,
    validate_request,
)

NOW = 1_750_000_000.0
TOKEN = "sandbox-token-0123456789"
PIXEL = "CTESTPIXEL0001"
HEADERS = {"Access-Token": TOKEN, "Content-Type": "application/json"}
DELETE = object()


def sha256(value):
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def valid_body():
    """A valid v1.3 request body, hashed properly and timed just before NOW."""
    return {
        "event_source": "web",
        "event_source_id": PIXEL,
        "partner_name": "django-tiktok-tracking",
        "test_event_code": "TEST12345",
        "data": [
            {
                "event": "Purchase",
                "event_time": int(NOW) - 60,
                "event_id": "order_1007",
                "user": {
                    "email": sha256("ann@example.com"),
                    "phone": sha256("+15551234567"),
                    "external_id": sha256("customer-42"),
                    "ttclid": "E.C.P.abcdef123456",
                    "ttp": "2Xk9YzAbCdEfGhIjKlMnOpQrStU",
                    "ip": "203.0.113.1",
                    "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
                    "locale": "en-US",
                },
                "properties": {
                    "currency": "USD",
                    "value": 89.99,
                    "content_type": "product",
                    "contents": [
                        {
                            "content_id": "SKU-123",
                            "content_name": "Mug",
                            "quantity": 1,
                            "price": 89.99,
                        }
                    ],
                    "order_id": "1007",
                    "shop_id": "shop-1",
                },
                "page": {
                    "url": "https://shop.example/checkout/thanks/",
                    "referrer": "https://shop.example/checkout/",
                },
                "limited_data_use": False,
            }
        ],
    }


def changed(path, value):
    """A valid body with the value at ``path`` (a tuple of keys/indices) replaced or deleted."""
    body = valid_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


def check(body, headers=HEADERS, *, token=TOKEN, pixels=None, now=NOW):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validate_request(headers, raw, expected_token=token, allowed_pixels=pixels, now=now)


def invalid(message):
    return Verdict(CODE_INVALID_PARAMETER, message)


EVENT = ("data", 0)
USER = (*EVENT, "user")
PROPS = (*EVENT, "properties")
CONTENT = (*PROPS, "contents", 0)
EVENT_NAMES = ", ".join(sorted(ALLOWED_EVENTS))


def test_valid_example_passes():
    assert check(valid_body()) == OK
    assert OK.ok and OK.message == "OK"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(changed((*EVENT, "event"), "CompletePayment"), id="legacy-event-name"),
        pytest.param(changed((*EVENT, "event_time"), int(NOW) + 600), id="ten-minutes-ahead"),
        pytest.param(changed((*EVENT, "event_time"), int(NOW) - 7 * 86400), id="seven-days-old"),
        pytest.param(changed((*EVENT, "event_id"), DELETE), id="no-event-id"),
        pytest.param(changed(USER, DELETE), id="no-user"),
        pytest.param(changed((*USER, "email"), [sha256("a"), sha256("b")]), id="email-list"),
        pytest.param(changed((*USER, "ttclid"), sha256("x")), id="hex-looking-ttclid"),
        pytest.param(changed((*USER, "ip"), "2001:db8::1"), id="ipv6"),
        pytest.param(changed((*USER, "first_name"), sha256("ann")), id="hashed-first-name"),
        pytest.param(changed((*USER, "country"), "US"), id="raw-country"),
        pytest.param(changed((*PROPS, "value"), 0), id="zero-int-value"),
        pytest.param(changed((*PROPS, "value"), DELETE), id="currency-without-value"),
        pytest.param(changed((*PROPS, "contents"), []), id="no-contents"),
        pytest.param(changed((*PROPS, "coupon"), {"code": "X", "n": [1, None]}), id="custom-prop"),
        pytest.param(changed((*PROPS, "content_type"), "product_group"), id="product-group"),
        pytest.param(changed((*EVENT, "limited_data_use"), True), id="limited-data-use"),
        pytest.param(changed(("test_event_code",), DELETE), id="no-test-code"),
        pytest.param(changed(("data",), [valid_body()["data"][0]] * 1000), id="1000-events"),
        pytest.param(changed(("event_source",), "crm"), id="crm-source"),
    ],
)
def test_valid_variants_pass(body):
    assert check(body) == OK


def test_every_standard_and_legacy_event_name_passes():
    for name in STANDARD_EVENTS | LEGACY_EVENTS:
        assert check(changed((*EVENT, "event"), name)) == OK, name


def test_currency_set_holds_active_codes_only():
    assert {"USD", "EUR", "JPY", "GBP", "BRL"} <= ISO_4217_CODES
    assert not {"XXX", "XTS", "XAU", "HRK", "usd"} & ISO_4217_CODES
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in ISO_4217_CODES)


# --- headers and body --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "token", "code", "message"),
    [
        pytest.param(
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            TOKEN,
            CODE_NO_PERMISSION,
            "Access-Token header is missing. An Authorization header was sent instead: "
            "TikTok reads the token only from Access-Token.",
            id="bearer-instead",
        ),
        pytest.param(
            {"Content-Type": "application/json"},
            None,
            CODE_NO_PERMISSION,
            "Access-Token header is missing.",
            id="no-token",
        ),
        pytest.param(
            {"Access-Token": "", "Content-Type": "application/json"},
            None,
            CODE_NO_PERMISSION,
            "Access-Token header is missing.",
            id="empty-token",
        ),
        pytest.param(
            {"Access-Token": "wrong", "Content-Type": "application/json"},
            TOKEN,
            CODE_NO_PERMISSION,
            "Access token is invalid.",
            id="wrong-token",
        ),
        pytest.param(
            {"Access-Token": TOKEN, "Content-Type": "text/plain"},
            TOKEN,
            CODE_INVALID_PARAMETER,
            "Content-Type must be application/json.",
            id="text-plain",
        ),
        pytest.param(
            {"Access-Token": TOKEN},
            TOKEN,
            CODE_INVALID_PARAMETER,
            "Content-Type must be application/json.",
            id="no-content-type",
        ),
        pytest.param(
            {"Access-Token": TOKEN, "Content-Type": "application/x-www-form-urlencoded"},
            TOKEN,
            CODE_INVALID_PARAMETER,
            "Content-Type must be application/json.",
            id="form-encoded",
        ),
    ],
)
def test_header_rules(headers, token, code, message):
    assert check(valid_body(), headers, token=token) == Verdict(code, message)


@pytest.mark.parametrize(
    "headers",
    [
        {"access-token": TOKEN, "content-type": "application/json; charset=utf-8"},
        {"ACCESS-TOKEN": TOKEN, "Content-Type": "Application/JSON"},
    ],
    ids=["lowercase-with-charset", "uppercase"],
)
def test_headers_are_case_insensitive(headers):
    assert check(valid_body(), headers) == OK


def test_any_token_accepted_when_none_expected():
    headers = {**HEADERS, "Access-Token": "whatever"}
    assert check(valid_body(), headers, token=None) == OK


def test_pixel_permission():
    assert check(valid_body(), pixels={PIXEL, "OTHER"}) == OK
    verdict = check(valid_body(), pixels={"OTHER"})
    assert verdict == Verdict(CODE_NO_PERMISSION, f"No permission to operate pixel code: {PIXEL}.")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "Request body is not valid JSON: Expecting value: line 1 column 1 (char 0)."),
        (b"{not json", None),
        (b'{"value": NaN}', None),
        (b"\xff\xfe\x00garbage", None),
        (b"[" * 100_000, None),
        (b"[]", "Request body must be a JSON object."),
        (b'"text"', "Request body must be a JSON object."),
        (b"null", "Request body must be a JSON object."),
    ],
    ids=["empty", "broken", "nan", "bad-bytes", "too-deep", "array", "string", "null"],
)
def test_body_must_be_a_json_object(raw, message):
    verdict = check(raw)
    assert verdict.code == CODE_INVALID_PARAMETER
    if message is None:
        assert verdict.message.startswith("Request body is not valid JSON")
    else:
        assert verdict.message == message


# --- the payload, one failing case per rule -------------------------------------------------

MS = int(NOW) * 1000

FAILURES = [
    # top level
    (("event_source",), "server", "event_source: Must be one of: web, app, offline, crm."),
    (("event_source",), 1, "event_source: Not a valid string."),
    (("event_source",), DELETE, "event_source: Missing data for required field."),
    (("event_source_id",), "", "event_source_id: Field may not be empty."),
    (("event_source_id",), 123, "event_source_id: Not a valid string."),
    (("event_source_id",), DELETE, "event_source_id: Missing data for required field."),
    (("partner_name",), None, "partner_name: Field may not be null."),
    (("test_event_code",), 5, "test_event_code: Not a valid string."),
    (("pixel_code",), PIXEL, "pixel_code: Unknown field."),
    (("data",), DELETE, "data: Missing data for required field."),
    (("data",), {}, "data: Not a valid list."),
    (("data",), [], "data: Length must be between 1 and 1000."),
    (("data",), [{}] * 1001, "data: Length must be between 1 and 1000."),
    (("data",), ["Purchase"], "data.0: Not a valid object."),
    # event
    ((*EVENT, "event"), "Checkout", f"data.0.event: Must be one of: {EVENT_NAMES}."),
    ((*EVENT, "event"), "purchase", f"data.0.event: Must be one of: {EVENT_NAMES}."),
    ((*EVENT, "event"), 1, "data.0.event: Not a valid string."),
    ((*EVENT, "event"), DELETE, "data.0.event: Missing data for required field."),
    ((*EVENT, "event_time"), float(int(NOW)), "data.0.event_time: Not a valid integer."),
    ((*EVENT, "event_time"), str(int(NOW)), "data.0.event_time: Not a valid integer."),
    ((*EVENT, "event_time"), True, "data.0.event_time: Not a valid integer."),
    ((*EVENT, "event_time"), None, "data.0.event_time: Field may not be null."),
    ((*EVENT, "event_time"), DELETE, "data.0.event_time: Missing data for required field."),
    (
        (*EVENT, "event_time"),
        MS,
        "data.0.event_time: Must be a Unix timestamp in seconds, not milliseconds.",
    ),
    (
        (*EVENT, "event_time"),
        int(NOW) + MAX_FUTURE_SECONDS + 1,
        "data.0.event_time: Must not be more than 10 minutes in the future.",
    ),
    (
        (*EVENT, "event_time"),
        int(NOW) - MAX_AGE_SECONDS - 1,
        "data.0.event_time: Must not be older than 7 days.",
    ),
    ((*EVENT, "event_id"), 1007, "data.0.event_id: Not a valid string."),
    ((*EVENT, "event_id"), "", "data.0.event_id: Field may not be empty."),
    ((*EVENT, "event_id"), "  ", "data.0.event_id: Field may not be empty."),
    ((*EVENT, "event_id"), None, "data.0.event_id: Field may not be null."),
    ((*EVENT, "eventId"), "order_1007", "data.0.eventId: Unknown field."),
    ((*EVENT, "limited_data_use"), "false", "data.0.limited_data_use: Not a valid boolean."),
    ((*EVENT, "limited_data_use"), 0, "data.0.limited_data_use: Not a valid boolean."),
    # user
    (USER, "ann@example.com", "data.0.user: Not a valid object."),
    ((*USER, "email"), "a@b.com", "data.0.user.email: Not a valid SHA-256 hash."),
    ((*USER, "email"), sha256("a").upper(), "data.0.user.email: Not a valid SHA-256 hash."),
    ((*USER, "email"), sha256("a")[:63], "data.0.user.email: Not a valid SHA-256 hash."),
    ((*USER, "email"), "", "data.0.user.email: Not a valid SHA-256 hash."),
    ((*USER, "email"), [sha256("a"), "a@b.com"], "data.0.user.email.1: Not a valid SHA-256 hash."),
    ((*USER, "email"), [sha256("a"), 7], "data.0.user.email.1: Not a valid string."),
    ((*USER, "email"), [], "data.0.user.email: Shorter than minimum length 1."),
    ((*USER, "email"), {"v": sha256("a")}, "data.0.user.email: Not a valid string."),
    ((*USER, "phone"), "+15551234567", "data.0.user.phone: Not a valid SHA-256 hash."),
    ((*USER, "external_id"), 42, "data.0.user.external_id: Not a valid string."),
    ((*USER, "first_name"), "Ann", "data.0.user.first_name: Not a valid SHA-256 hash."),
    ((*USER, "last_name"), "Lee", "data.0.user.last_name: Not a valid SHA-256 hash."),
    ((*USER, "city"), "Austin", "data.0.user.city: Not a valid SHA-256 hash."),
    ((*USER, "zip_code"), "78701", "data.0.user.zip_code: Not a valid SHA-256 hash."),
    ((*USER, "country"), 840, "data.0.user.country: Not a valid string."),
    ((*USER, "state"), ["TX"], "data.0.user.state: Not a valid string."),
    ((*USER, "ttclid"), 123, "data.0.user.ttclid: Not a valid string."),
    ((*USER, "ttp"), None, "data.0.user.ttp: Field may not be null."),
    ((*USER, "user_agent"), 5, "data.0.user.user_agent: Not a valid string."),
    ((*USER, "locale"), False, "data.0.user.locale: Not a valid string."),
    ((*USER, "ip"), "999.1.1.1", "data.0.user.ip: Not a valid IP address."),
    ((*USER, "ip"), "localhost", "data.0.user.ip: Not a valid IP address."),
    ((*USER, "ip"), 3405803777, "data.0.user.ip: Not a valid string."),
    ((*USER, "emails"), sha256("a"), "data.0.user.emails: Unknown field."),
    ((*USER, "phone_number"), sha256("a"), "data.0.user.phone_number: Unknown field."),
    # properties
    (PROPS, [], "data.0.properties: Not a valid object."),
    (
        (*PROPS, "currency"),
        "usd",
        "data.0.properties.currency: Not a valid ISO 4217 currency code.",
    ),
    (
        (*PROPS, "currency"),
        "XYZ",
        "data.0.properties.currency: Not a valid ISO 4217 currency code.",
    ),
    ((*PROPS, "currency"), 840, "data.0.properties.currency: Not a valid string."),
    ((*PROPS, "currency"), DELETE, "data.0.properties.currency: Required when value is set."),
    ((*PROPS, "value"), "89.99", "data.0.properties.value: Not a valid number."),
    ((*PROPS, "value"), True, "data.0.properties.value: Not a valid number."),
    ((*PROPS, "value"), -1, "data.0.properties.value: Must be greater than or equal to 0."),
    ((*PROPS, "value"), None, "data.0.properties.value: Field may not be null."),
    (
        (*PROPS, "content_type"),
        "sku",
        "data.0.properties.content_type: Must be one of: product, product_group.",
    ),
    ((*PROPS, "contents"), {"content_id": "1"}, "data.0.properties.contents: Not a valid list."),
    ((*PROPS, "contents"), ["SKU-123"], "data.0.properties.contents.0: Not a valid object."),
    (
        (*CONTENT, "content_id"),
        123,
        "data.0.properties.contents.0.content_id: Not a valid string.",
    ),
    (
        (*CONTENT, "content_id"),
        DELETE,
        "data.0.properties.contents.0.content_id: Missing data for required field.",
    ),
    (
        (*CONTENT, "content_name"),
        1,
        "data.0.properties.contents.0.content_name: Not a valid string.",
    ),
    (
        (*CONTENT, "content_category"),
        1,
        "data.0.properties.contents.0.content_category: Not a valid string.",
    ),
    ((*CONTENT, "brand"), 1, "data.0.properties.contents.0.brand: Not a valid string."),
    (
        (*CONTENT, "quantity"),
        0,
        "data.0.properties.contents.0.quantity: Must be greater than or equal to 1.",
    ),
    ((*CONTENT, "quantity"), 1.5, "data.0.properties.contents.0.quantity: Not a valid integer."),
    ((*CONTENT, "quantity"), "1", "data.0.properties.contents.0.quantity: Not a valid integer."),
    (
        (*CONTENT, "price"),
        -0.01,
        "data.0.properties.contents.0.price: Must be greater than or equal to 0.",
    ),
    ((*CONTENT, "price"), "9.99", "data.0.properties.contents.0.price: Not a valid number."),
    ((*CONTENT, "sku"), "SKU-123", "data.0.properties.contents.0.sku: Unknown field."),
    ((*PROPS, "order_id"), 1007, "data.0.properties.order_id: Not a valid string."),
    ((*PROPS, "shop_id"), 1, "data.0.properties.shop_id: Not a valid string."),
    ((*PROPS, "content_id"), 5, "data.0.properties.content_id: Not a valid string."),
    ((*PROPS, "description"), 5, "data.0.properties.description: Not a valid string."),
    ((*PROPS, "query"), ["mug"], "data.0.properties.query: Not a valid string."),
    # page
    ((*EVENT, "page"), "https://shop.example/", "data.0.page: Not a valid object."),
    ((*EVENT, "page", "url"), 1, "data.0.page.url: Not a valid string."),
    ((*EVENT, "page", "referrer"), None, "data.0.page.referrer: Field may not be null."),
    ((*EVENT, "page", "title"), "Thanks", "data.0.page.title: Unknown field."),
]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    FAILURES,
    ids=[f"{'.'.join(map(str, path))}={value!r:.30}" for path, value, _ in FAILURES],
)
def test_payload_rule(path, value, message):
    assert check(changed(path, value)) == invalid(message)


def test_first_error_wins():
    body = valid_body()
    second = copy.deepcopy(body["data"][0])
    second["event_id"] = 7
    body["data"][0]["event_time"] = MS
    body["data"].append(second)
    assert check(body).message.startswith("data.0.event_time:")
    body["data"][0]["event_time"] = int(NOW)
    assert check(body) == invalid("data.1.event_id: Not a valid string.")


def test_unknown_key_reported_before_field_errors():
    body = changed((*USER, "email"), "raw@example.com")
    body["data"][0]["user"]["mail"] = "x"
    assert check(body) == invalid("data.0.user.mail: Unknown field.")


def test_token_checked_before_body():
    headers = {"Content-Type": "application/json"}
    assert check(b"{broken", headers).code == CODE_NO_PERMISSION


def test_validate_payload_on_parsed_body():
    assert validate_payload(valid_body(), now=NOW) == OK
    bad = changed((*EVENT, "event_id"), 1)
    assert validate_payload(bad, now=NOW) == invalid("data.0.event_id: Not a valid string.")
    assert validate_payload(valid_body(), allowed_pixels=(), now=NOW).code == CODE_NO_PERMISSION


# --- properties over many inputs ----------------------------------------------------------

HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
NOT_HASH = st.text(max_size=100).filter(lambda s: not re.fullmatch(r"[0-9a-f]{64}", s))
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.integers())
def test_any_integer_event_id_is_rejected(event_id):
    verdict = check(changed((*EVENT, "event_id"), event_id))
    assert verdict == invalid("data.0.event_id: Not a valid string.")


@given(st.text(min_size=1).filter(str.strip))
def test_any_non_blank_string_event_id_passes(event_id):
    assert check(changed((*EVENT, "event_id"), event_id)) == OK


@given(HEX64)
def test_any_lowercase_hex_email_passes(email):
    assert check(changed((*USER, "email"), email)) == OK


@given(NOT_HASH)
def test_any_non_hash_email_is_rejected(email):
    verdict = check(changed((*USER, "email"), email))
    assert verdict == invalid("data.0.user.email: Not a valid SHA-256 hash.")


@given(st.lists(HEX64, min_size=1, max_size=5), NOT_HASH, st.data())
def test_first_non_hash_in_an_email_list_is_named(hashes, bad, data):
    index = data.draw(st.integers(min_value=0, max_value=len(hashes)))
    emails = [*hashes[:index], bad, *hashes[index:]]
    verdict = check(changed((*USER, "email"), emails))
    assert verdict == invalid(f"data.0.user.email.{index}: Not a valid SHA-256 hash.")


@given(st.integers(min_value=int(NOW) - MAX_AGE_SECONDS, max_value=int(NOW) - 1))
def test_any_event_time_in_milliseconds_is_rejected(seconds):
    verdict = check(changed((*EVENT, "event_time"), seconds * 1000 + seconds % 1000))
    assert verdict == invalid(
        "data.0.event_time: Must be a Unix timestamp in seconds, not milliseconds."
    )


@given(st.integers(min_value=10**11))
def test_any_huge_event_time_is_rejected(value):
    assert check(changed((*EVENT, "event_time"), value)).code == CODE_INVALID_PARAMETER


@given(st.integers(min_value=-MAX_AGE_SECONDS, max_value=MAX_FUTURE_SECONDS))
def test_any_event_time_within_the_window_passes(offset):
    assert check(changed((*EVENT, "event_time"), int(NOW) + offset)) == OK


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_float_event_time_is_rejected(value):
    verdict = check(changed((*EVENT, "event_time"), value))
    assert verdict == invalid("data.0.event_time: Not a valid integer.")


@given(st.integers(min_value=0) | st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_any_non_negative_value_passes(value):
    assert check(changed((*PROPS, "value"), value)) == OK


@given(st.text(min_size=3, max_size=3).filter(lambda s: s not in ISO_4217_CODES))
def test_any_other_currency_is_rejected(currency):
    verdict = check(changed((*PROPS, "currency"), currency))
    assert verdict == invalid("data.0.properties.currency: Not a valid ISO 4217 currency code.")


@given(JSON_VALUES)
def test_custom_properties_accept_any_json(value):
    assert check(changed((*PROPS, "custom_field"), value)) == OK


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw):
    verdict = check(raw)
    assert isinstance(verdict, Verdict)
    assert verdict.code in (0, CODE_INVALID_PARAMETER, CODE_NO_PERMISSION)


@given(JSON_VALUES)
def test_arbitrary_json_never_raises(value):
    verdict = check(value)
    assert verdict.code == CODE_INVALID_PARAMETER
    assert verdict.message
