"""Tests of match-key normalisation and hashing."""

import hashlib
import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat

from tiktok_tracking.hashing import (
    hash_email,
    hash_external_id,
    hash_phone,
    is_sha256_hex,
    normalize_email,
    normalize_external_id,
    normalize_phone,
    sha256_hex,
)

LOWER_HEX_64 = re.compile(r"[0-9a-f]{64}")
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

ascii_emails = st.from_regex(r"[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,20}\.[a-z]{2,6}", fullmatch=True)
# Country code and subscriber number together: 7 to 15 digits, no leading 0 (E.164).
e164_digits = st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True)
# phonenumbers' example numbers, every region, as E.164 digits without the "+".
example_e164_digits = st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)).map(
    lambda region: phonenumbers.format_number(
        phonenumbers.example_number(region), PhoneNumberFormat.E164
    )[1:]
)
whitespace = st.text(alphabet=" \t\n", max_size=3)


def hash_functions():
    return pytest.mark.parametrize("hash_match_key", [hash_email, hash_phone, hash_external_id])


# sha256_hex and is_sha256_hex -----------------------------------------------------------------


def test_sha256_hex_is_lowercase_hex_of_utf8():
    assert sha256_hex("abc") == ABC_SHA256
    assert sha256_hex("ünïcode") == hashlib.sha256("ünïcode".encode()).hexdigest()


@pytest.mark.parametrize("value", [ABC_SHA256, ABC_SHA256.upper(), "0" * 64, "F" * 64])
def test_is_sha256_hex_accepts_64_hex_characters_in_either_case(value):
    assert is_sha256_hex(value)


@pytest.mark.parametrize(
    "value",
    [ABC_SHA256[:-1], ABC_SHA256 + "0", "g" * 64, ABC_SHA256 + "\n", " " + ABC_SHA256, "", None, 1],
)
def test_is_sha256_hex_rejects_anything_else(value):
    assert not is_sha256_hex(value)


# normalize_email --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane@example.com", "jane@example.com"),
        ("  Jane.Doe@Example.COM \n", "jane.doe@example.com"),
        ("", None),
        ("   ", None),
        ("not-an-email", None),
        (None, None),
    ],
)
def test_normalize_email(raw, expected):
    assert normalize_email(raw) == expected


# normalize_phone --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+14155550100", None, "+14155550100"),
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("0014155550100", None, "+14155550100"),
        ("00 44 20 7946 0958", None, "+442079460958"),
        ("  +44.20.7946.0958  ", None, "+442079460958"),
        (14155550100, "US", "+14155550100"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("07700 900123", "GB", "+447700900123"),
        ("+683 4002", None, "+6834002"),  # Niue: 7 digits in all
    ],
)
def test_normalize_phone_gives_e164(raw, country, expected):
    assert normalize_phone(raw, country) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "call me",
        "+123456",  # 6 digits: too short
        "+1234567",  # too short for the US
        "+1234567890123456",  # 16 digits: longer than E.164 allows
        "07700 900123",  # national trunk prefix, country unknown
        "4155550100",  # no country code, country unknown
    ],
)
def test_normalize_phone_returns_none_rather_than_raise(raw):
    assert normalize_phone(raw) is None


# normalize_external_id --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  cust-42 ", "cust-42"), (42, "42"), ("", None), ("  ", None), (None, None)],
)
def test_normalize_external_id(raw, expected):
    assert normalize_external_id(raw) == expected


# hash_email, hash_phone, hash_external_id -------------------------------------------------


def test_hash_email_hashes_the_normalised_email():
    assert hash_email(" Jane@Example.com ") == sha256_hex("jane@example.com")


def test_hash_phone_hashes_the_e164_number():
    assert hash_phone("+1 (415) 555-0100") == sha256_hex("+14155550100")


def test_hash_external_id_hashes_the_trimmed_id():
    assert hash_external_id(" 42 ") == sha256_hex("42")
    assert hash_external_id(42) == sha256_hex("42")


@hash_functions()
def test_a_digest_is_passed_through_lowercased_not_hashed_again(hash_match_key):
    assert hash_match_key(ABC_SHA256) == ABC_SHA256
    assert hash_match_key(f"  {ABC_SHA256.upper()} ") == ABC_SHA256


@hash_functions()
def test_none_and_empty_give_none(hash_match_key):
    assert hash_match_key(None) is None
    assert hash_match_key("") is None
    assert hash_match_key("   ") is None


def test_unusable_email_and_phone_give_none():
    assert hash_email("no at sign") is None
    assert hash_phone("12") is None


# Properties -------------------------------------------------------------------------------


@hash_functions()
@given(value=st.one_of(st.text(), st.integers()))
def test_hashes_are_64_lowercase_hex_or_none(hash_match_key, value):
    hashed = hash_match_key(value)
    assert hashed is None or LOWER_HEX_64.fullmatch(hashed)


@hash_functions()
@given(value=st.one_of(st.text(), st.integers(), ascii_emails, e164_digits))
def test_hashing_is_idempotent(hash_match_key, value):
    hashed = hash_match_key(value)
    if hashed is not None:
        assert hash_match_key(hashed) == hashed


@given(email=ascii_emails, before=whitespace, after=whitespace)
def test_email_hash_ignores_case_and_surrounding_whitespace(email, before, after):
    assert hash_email(f"{before}{email.upper()}{after}") == hash_email(email)
    assert hash_email(email) == sha256_hex(email)


@given(email=ascii_emails)
def test_email_hash_is_never_the_raw_email(email):
    assert email not in hash_email(email)


def test_common_phone_formats_share_one_hash():
    formats = ["+1 (415) 555-0100", "0014155550100", "+14155550100"]
    assert {hash_phone(raw) for raw in formats} == {sha256_hex("+14155550100")}


@given(
    digits=example_e164_digits,
    separators=st.lists(st.sampled_from([" ", "-", ".", "(", ")", "/"]), min_size=15, max_size=15),
)
def test_phone_formats_of_one_number_share_one_hash(digits, separators):
    pairs = zip(digits, separators[: len(digits)], strict=True)
    spaced = "".join(digit + separator for digit, separator in pairs)
    formats = ["+" + digits, "00" + digits, "+" + spaced, f" 00 {spaced} "]
    assert {hash_phone(raw) for raw in formats} == {sha256_hex("+" + digits)}
