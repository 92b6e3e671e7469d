"""Normalising and SHA-256 hashing the match keys TikTok takes hashed: email, phone, external_id."""

import hashlib
import re
from functools import partial

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

# E.164 allows at most 15 digits after the "+". phonenumbers calls a few longer dialling strings
# possible (Japan's carrier prefixes, for one); nobody is reached at those from abroad.
PHONE_MAX_DIGITS = 15


def sha256_hex(value: str) -> str:
    """The lowercase hex SHA-256 digest of ``value`` encoded as UTF-8."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_sha256_hex(value) -> bool:
    """Whether ``value`` is a string of exactly 64 hex characters (either case)."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def normalize_email(value) -> str | None:
    """``value`` trimmed and lowercased, or None when it is empty or has no ``@``."""
    if value is None:
        return None
    email = str(value).strip().lower()
    if not email or "@" not in email:
        return None
    return email


def normalize_phone(value, country=None) -> str | None:
    """``value`` in E.164 form (``+`` and digits), or None when it is not a possible number.

    ``country`` is the order's ISO 3166-1 alpha-2 code: a number typed without a country code
    is read as that country's (``(415) 555-2671`` in the US is ``+14155552671``). Without it
    only a number written with ``+`` or ``00`` can be read. Match-key normalisers return None
    rather than raise: a badly typed phone number must never cost the shop its purchase event.
    """
    if value is None:
        return None
    raw = str(value).strip()
    number = _possible_phone_number(raw, _phone_region(country))
    if number is None and raw.startswith("00"):
        # 00 is the international prefix of most of the world, so customers type it even where
        # the order's country dials out with another (011 in the US) or the country is unknown;
        # phonenumbers reads only the region's own prefix. Tried second, so a region that reads
        # the number as its own keeps it.
        number = _possible_phone_number("+" + raw[2:], None)
    if number is None:
        return None
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if len(e164) - 1 > PHONE_MAX_DIGITS:
        return None
    # Some forms change when read again: leading zeros of the national number ("+43 000000")
    # are counted anew, a carrier code is taken out ("+55 90 ..." in Brazil). A form that does
    # not read back as itself is nobody's number, and the two lanes could hash it differently.
    if _e164(_possible_phone_number(e164, None)) != e164:
        return None
    return e164


def _e164(number):
    return None if number is None else phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _phone_region(country):
    # phonenumbers knows regions by uppercase code only; anything else reads as no region.
    return country.strip().upper() if isinstance(country, str) else None


def _possible_phone_number(raw, region):
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException:
        return None
    # Possible, not valid: validity checks the ranges allocated when this phonenumbers release
    # was cut, and a new range would drop real customers, while a possible but unallocated
    # number only hashes to a digest nobody matches. is_possible_number() would also accept
    # IS_POSSIBLE_LOCAL_ONLY ("555-2671", no area code), whose E.164 form is someone else's.
    if phonenumbers.is_possible_number_with_reason(number) != ValidationResult.IS_POSSIBLE:
        return None
    return number


def normalize_external_id(value) -> str | None:
    """``value`` as a trimmed string, or None when that is empty."""
    if value is None:
        return None
    external_id = str(value).strip()
    return external_id or None


def _hash_match_key(value, normalize) -> str | None:
    if value is None:
        return None
    # Shops that hash on their side send digests; hashing those again would never match.
    candidate = str(value).strip()
    if is_sha256_hex(candidate):
        return candidate.lower()
    normalized = normalize(candidate)
    if normalized is None:
        return None
    try:
        return sha256_hex(normalized)
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form: nobody's email or id, so nothing to match on.
        return None


def hash_email(value) -> str | None:
    """The SHA-256 hex of the normalised email, a given digest lowercased, or None."""
    return _hash_match_key(value, normalize_email)


def hash_phone(value, country=None) -> str | None:
    """The SHA-256 hex of the E.164 phone number, a given digest lowercased, or None.

    ``country``, the order's ISO code, is the region of a number typed without a country code.
    """
    return _hash_match_key(value, partial(normalize_phone, country=country))


def hash_external_id(value) -> str | None:
    """The SHA-256 hex of the trimmed external id, a given digest lowercased, or None."""
    return _hash_match_key(value, normalize_external_id)
