"""Normalising and SHA-256 hashing the match keys TikTok takes hashed: email, phone, external_id."""

import hashlib
import re

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_NON_DIGITS = re.compile(r"[^0-9]")

# E.164 allows at most 15 digits; fewer than 7 cannot be a reachable number anywhere.
PHONE_MIN_DIGITS = 7
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


def normalize_phone(value) -> str | None:
    """``value`` in E.164 form (``+`` and digits), or None when it cannot be one.

    Match-key normalisers return None rather than raise: a badly typed phone number must never
    cost the shop its purchase event.
    """
    if value is None:
        return None
    raw = str(value).strip()
    digits = _NON_DIGITS.sub("", raw)
    # "00" is the international call prefix in most of the world: "0044..." means "+44...".
    if not raw.startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    if not PHONE_MIN_DIGITS <= len(digits) <= PHONE_MAX_DIGITS:
        return None
    # No country calling code starts with 0, so a leading 0 is a national trunk prefix
    # ("07700 900123") whose country we cannot know; its hash could never match anyone.
    if digits.startswith("0"):
        return None
    return "+" + digits


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
    return sha256_hex(normalized) if normalized is not None else None


def hash_email(value) -> str | None:
    """The SHA-256 hex of the normalised email, a given digest lowercased, or None."""
    return _hash_match_key(value, normalize_email)


def hash_phone(value) -> str | None:
    """The SHA-256 hex of the E.164 phone number, a given digest lowercased, or None."""
    return _hash_match_key(value, normalize_phone)


def hash_external_id(value) -> str | None:
    """The SHA-256 hex of the trimmed external id, a given digest lowercased, or None."""
    return _hash_match_key(value, normalize_external_id)
