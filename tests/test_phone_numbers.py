"""Phone numbers read in the order's country, checked against phonenumbers' own examples."""

from types import SimpleNamespace

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from tests.factories import make_order
from tests.test_template_tags import call_arguments, make_request, render
from tiktok_tracking.adapters import OrderAdapter
from tiktok_tracking.events import build_event, read_order
from tiktok_tracking.hashing import hash_phone, normalize_phone, sha256_hex

EVENT_TIME = 1_700_000_000

# The audit's three numbers: a US number typed as dialled at home, an international number with
# the trunk 0 in brackets (no country needed), and a German mobile typed nationally.
AUDIT_NUMBERS = [
    pytest.param("(415) 555-2671", "US", "+14155552671", id="US-national"),
    pytest.param("+44 (0) 20 7946 0958", None, "+442079460958", id="GB-trunk-in-brackets"),
    pytest.param("0151 2345 6789", "DE", "+4915123456789", id="DE-national"),
]

# Where shops sell, with and without a trunk prefix (IT, ES: none; RU: 8; US, CA: 1).
COUNTRIES = [
    "US", "CA", "MX", "BR", "AR", "GB", "IE", "DE", "FR", "IT", "ES", "NL", "PL", "SE",
    "TR", "RU", "IN", "JP", "KR", "CN", "AU", "ZA", "NG", "AE",
]  # fmt: skip
EXAMPLE_TYPES = {"fixed_line": PhoneNumberType.FIXED_LINE, "mobile": PhoneNumberType.MOBILE}


def example(region, kind):
    number = phonenumbers.example_number_for_type(region, EXAMPLE_TYPES[kind])
    assert number is not None, (region, kind)
    return number


def written(number, form):
    return phonenumbers.format_number(number, form)


def e164(number):
    return written(number, PhoneNumberFormat.E164)


def server_lane_phone(phone, country):
    facts = read_order(OrderAdapter(make_order(phone=phone, country=country)))
    return build_event("Purchase", facts, event_time=EVENT_TIME)["user"].get("phone")


def browser_lane_phone(source, request, **context):
    [[identity]] = call_arguments(render(source, request, **context), "ttq.identify")
    return identity.get("sha256_phone_number")


# The audit's regression, through both lanes ----------------------------------------------------


@pytest.mark.parametrize(("phone", "country", "expected"), AUDIT_NUMBERS)
def test_national_phone_numbers_hash_with_the_orders_country(phone, country, expected):
    digest = sha256_hex(expected)
    order = make_order(phone=phone, country=country)

    assert server_lane_phone(phone, country) == digest
    # The visitor's country stands in when the shop passes none...
    assert (
        browser_lane_phone(
            "{% tiktok_pixel phone=order.phone %}",
            make_request(country=country, consent="granted"),
            order=order,
        )
        == digest
    )
    # ...and the order's country, as the server lane reads it, when the shop passes it.
    assert (
        browser_lane_phone(
            "{% tiktok_pixel phone=order.phone country=order.country %}",
            make_request(consent="granted"),
            order=order,
        )
        == digest
    )
    assert normalize_phone(phone, country) == expected


def test_a_national_number_is_left_out_when_the_country_is_unknown():
    assert server_lane_phone("(415) 555-2671", None) is None
    assert server_lane_phone("0151 2345 6789", "") is None
    html = render(
        "{% tiktok_pixel phone=phone %}", make_request(consent="granted"), phone="0151 2345 6789"
    )
    assert "ttq.identify(" not in html


def test_the_tags_country_wins_over_the_visitors():
    request = make_request(country="US", consent="granted")
    source = "{% tiktok_pixel phone=phone country=country %}"
    german_mobile = sha256_hex("+4915123456789")

    assert (
        browser_lane_phone(source, request, phone="0151 2345 6789", country="de") == german_mobile
    )
    # A django-countries Country carries its code in .code.
    country = SimpleNamespace(code="DE")
    assert browser_lane_phone(source, request, phone="0151 2345 6789", country=country) == (
        german_mobile
    )


@pytest.mark.parametrize("unreadable", ["Germany", "XX", 49])
def test_an_unreadable_country_in_the_tag_gives_way_to_the_visitors(unreadable):
    digest = browser_lane_phone(
        "{% tiktok_pixel phone=phone country=country %}",
        make_request(country="US", consent="granted"),
        phone="(415) 555-2671",
        country=unreadable,
    )

    assert digest == sha256_hex("+14155552671")


# phonenumbers' own examples --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXAMPLE_TYPES))
@pytest.mark.parametrize("region", COUNTRIES)
def test_the_librarys_examples_give_their_e164_form(region, kind):
    number = example(region, kind)
    expected = e164(number)
    national = written(number, PhoneNumberFormat.NATIONAL)
    international = written(number, PhoneNumberFormat.INTERNATIONAL)

    assert normalize_phone(national, region) == expected
    assert normalize_phone(international) == expected
    assert normalize_phone(international, region) == expected
    assert normalize_phone(expected, region) == expected
    assert normalize_phone("00" + international[1:]) == expected
    # A number written for abroad wins over the order's country: a customer may live elsewhere.
    other = "JP" if region != "JP" else "US"
    assert normalize_phone(international, other) == expected
    assert hash_phone(national, region) == sha256_hex(expected)


@pytest.mark.parametrize(
    "region",
    [
        region
        for region in COUNTRIES
        if phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
    ],
)
def test_a_trunk_prefix_after_the_country_code_is_dropped(region):
    trunk = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
    number = example(region, "fixed_line")
    country_code, rest = written(number, PhoneNumberFormat.INTERNATIONAL).split(" ", 1)
    national_digits = phonenumbers.national_significant_number(number)

    assert normalize_phone(f"{country_code} ({trunk}) {rest}") == e164(number)
    assert normalize_phone(f"{trunk}{national_digits}", region) == e164(number)


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_every_region_reads_its_national_example_with_its_country(region):
    number = phonenumbers.example_number(region)

    assert normalize_phone(written(number, PhoneNumberFormat.NATIONAL), region) == e164(number)
    assert normalize_phone(written(number, PhoneNumberFormat.INTERNATIONAL)) == e164(number)


# What is left out rather than sent wrong --------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "country"),
    [
        ("(415) 555-2671", None),  # no country code and no country: +4155552671 is someone else
        ("0151 2345 6789", None),
        ("0151 2345 6789", "ZZ"),  # not a region phonenumbers knows
        ("555-2671", "US"),  # only dialable locally: the area code is missing
        ("+1 415 555", None),  # too short for the US
        ("+44 20 7946 0958 1234 5", None),  # too long for the UK
        ("0033 1 415 555 0100", "JP"),  # possible in Japan, but longer than E.164's 15 digits
        ("+0 415 555 2671", None),  # no country code starts with 0
        ("call me", "US"),
        ("", "US"),
    ],
)
def test_numbers_that_are_not_possible_are_left_out(phone, country):
    assert normalize_phone(phone, country) is None
    assert hash_phone(phone, country) is None


@pytest.mark.parametrize(
    ("phone", "country", "expected"),
    [
        # A customer abroad types the international prefix most of the world uses.
        ("0044 20 7946 0958", "US", "+442079460958"),
        ("0044 20 7946 0958", None, "+442079460958"),
        # The order's country's own international prefix.
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("010 44 20 7946 0958", "JP", "+442079460958"),
        ("00 1 415 555 2671", "DE", "+14155552671"),
        # The country as a shop might store it.
        ("(415) 555-2671", " us ", "+14155552671"),
        (14155552671, "US", "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        ("+1 415 555 2671 ext. 12", None, "+14155552671"),
    ],
)
def test_international_prefixes_and_written_forms(phone, country, expected):
    assert normalize_phone(phone, country) == expected


def test_a_digest_is_passed_through_whatever_the_country():
    digest = sha256_hex("+14155552671")

    assert hash_phone(digest.upper(), "DE") == digest
    assert hash_phone(digest, None) == digest


@given(
    phone=st.one_of(st.text(), st.from_regex(r"[+0-9 ()\-.]{0,30}", fullmatch=True)),
    country=st.one_of(
        st.none(),
        st.sampled_from([*COUNTRIES, "", "us", "ZZ", "UK", "001"]),
        st.text(),
        st.integers(),
    ),
)
def test_phone_normalisation_never_raises(phone, country):
    normalized = normalize_phone(phone, country)

    if normalized is not None:
        assert normalize_phone(normalized) == normalized
        assert len(normalized) <= 16


@pytest.mark.parametrize(
    "phone, country",
    [("+43000000", None), ("+4300000", None), ("+39 000 0000", None), ("09034473374", "BR")],
)
def test_a_number_whose_e164_form_does_not_read_back_as_itself_is_left_out(phone, country):
    normalized = normalize_phone(phone, country)
    assert normalized is None or normalize_phone(normalized) == normalized
