"""Strict checks of an Events API track request, answered the way TikTok answers."""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tiktok_tracking.standards import (
    ALLOWED_EVENTS,
    CODE_INVALID_PARAMETER,
    CODE_NO_PERMISSION,
    CODE_OK,
    CODE_TOO_MANY_REQUESTS,
    ISO_4217_CODES,
    LEGACY_EVENTS,
    MAX_BATCH_SIZE,
    STANDARD_EVENTS,
)

__all__ = [
    "ALLOWED_EVENTS",
    "CODE_INVALID_PARAMETER",
    "CODE_NO_PERMISSION",
    "CODE_OK",
    "CODE_TOO_MANY_REQUESTS",
    "CONTENT_TYPES",
    "EVENT_SOURCES",
    "ISO_4217_CODES",
    "LEGACY_EVENTS",
    "MAX_AGE_SECONDS",
    "MAX_BATCH_SIZE",
    "MAX_FUTURE_SECONDS",
    "MILLISECONDS_THRESHOLD",
    "OK",
    "STANDARD_EVENTS",
    "Verdict",
    "header_value",
    "parse_body",
    "token_status",
    "validate_payload",
    "validate_request",
]


EVENT_SOURCES = ("web", "app", "offline", "crm")
CONTENT_TYPES = ("product", "product_group")

MAX_FUTURE_SECONDS = 10 * 60
MAX_AGE_SECONDS = 7 * 24 * 60 * 60
# Unix seconds stay below 10**11 until the year 5138, so anything larger is milliseconds.
MILLISECONDS_THRESHOLD = 10**11


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ACCESS_HEADER = "access-token"


@dataclass(frozen=True)
class Verdict:
    """TikTok's answer to one request: ``code`` 0 and ``"OK"``, or an error code and message."""

    code: int
    message: str

    @property
    def ok(self) -> bool:
        return self.code == CODE_OK


OK = Verdict(CODE_OK, "OK")


class _Rejected(Exception):
    """Carries the first problem found out of any depth of the walk."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.verdict = Verdict(code, message)


# A field's path is kept as nested pairs, ``((("", "data"), 3), "user")``, and spelled out
# (``data.3.user``) only for the message of a rejection: a 1,000-event body has some 50,000
# fields, and formatting each one's path cost more than checking it.
_Path = Any


def _dotted(path: _Path) -> str:
    keys = []
    while isinstance(path, tuple):
        path, key = path
        keys.append(str(key))
    if path:
        keys.append(path)
    return ".".join(reversed(keys))


def _invalid(path: _Path, reason: str) -> _Rejected:
    return _Rejected(CODE_INVALID_PARAMETER, f"{_dotted(path)}: {reason}")


def _join(path: _Path, key: str | int) -> _Path:
    return (path, key)


# --- headers -------------------------------------------------------------------------------


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The first value of header ``name``, looked up case-insensitively."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def token_status(
    headers: Mapping[str, str], expected_token: str | None
) -> tuple[bool, bool | None]:
    """``(present, valid)`` for the Access-Token header; ``valid`` is None if nothing to check."""
    token = header_value(headers, _ACCESS_HEADER)
    present = bool(token)
    if expected_token is None:
        return present, None
    return present, present and _same_secret(token, expected_token)


def _same_secret(given: str | None, expected: str) -> bool:
    # Constant-time, so the sandbox does not teach clients bad habits about token comparison.
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _check_headers(headers: Mapping[str, str], expected_token: str | None) -> None:
    token = header_value(headers, _ACCESS_HEADER)
    if not token:
        message = "Access-Token header is missing."
        if header_value(headers, "authorization") is not None:
            message += (
                " An Authorization header was sent instead: TikTok reads the token only"
                " from Access-Token."
            )
        raise _Rejected(CODE_NO_PERMISSION, message)
    if expected_token is not None and not _same_secret(token, expected_token):
        raise _Rejected(CODE_NO_PERMISSION, "Access token is invalid.")

    content_type = header_value(headers, "content-type") or ""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise _Rejected(CODE_INVALID_PARAMETER, "Content-Type must be application/json.")


# --- body ----------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# ``validate_request``'s default: the body has not been parsed yet (None is valid JSON).
NOT_PARSED = object()


def parse_body(raw_body: bytes) -> Any:
    """The JSON value of ``raw_body``; raises ``ValueError`` on anything strict JSON refuses."""
    try:
        return json.loads(raw_body, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


# --- field checks: each takes (value, path) and raises on the first problem ----------------

_Check = Callable[[Any, str], None]


def _string(value: Any, path: _Path) -> None:
    if not isinstance(value, str):
        raise _invalid(path, "Not a valid string.")


def _non_empty_string(value: Any, path: _Path) -> None:
    _string(value, path)
    if not value.strip():
        raise _invalid(path, "Field may not be empty.")


def _one_of(choices: tuple[str, ...]) -> _Check:
    def check(value: Any, path: _Path) -> None:
        _string(value, path)
        if value not in choices:
            raise _invalid(path, f"Must be one of: {', '.join(choices)}.")

    return check


def _boolean(value: Any, path: _Path) -> None:
    if not isinstance(value, bool):
        raise _invalid(path, "Not a valid boolean.")


def _integer(value: Any, path: _Path) -> None:
    # JSON true/false arrive as bool, which Python counts as int.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(path, "Not a valid integer.")


def _number(value: Any, path: _Path) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(path, "Not a valid number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(path, "Not a valid number.")


def _at_least(check: _Check, minimum: int) -> _Check:
    def bounded(value: Any, path: _Path) -> None:
        check(value, path)
        if value < minimum:
            raise _invalid(path, f"Must be greater than or equal to {minimum}.")

    return bounded


def _object(value: Any, path: _Path) -> None:
    if not isinstance(value, dict):
        raise _invalid(path, "Not a valid object.")


def _sha256(value: Any, path: _Path) -> None:
    _string(value, path)
    if not _SHA256_HEX.fullmatch(value):
        raise _invalid(path, "Not a valid SHA-256 hash.")


def _sha256_or_list(value: Any, path: _Path) -> None:
    if isinstance(value, list):
        if not value:
            raise _invalid(path, "Shorter than minimum length 1.")
        for index, item in enumerate(value):
            _sha256(item, _join(path, index))
    else:
        _sha256(value, path)


def _ip_address(value: Any, path: _Path) -> None:
    # Checked as a string first: ipaddress.ip_address() happily accepts integers.
    _string(value, path)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _invalid(path, "Not a valid IP address.") from None


def _currency(value: Any, path: _Path) -> None:
    _string(value, path)
    if value not in ISO_4217_CODES:
        raise _invalid(path, "Not a valid ISO 4217 currency code.")


def _any_json(value: Any, path: _Path) -> None:
    """Custom properties: whatever JSON carries is acceptable."""


def _list_of(item_check: _Check) -> _Check:
    def check(value: Any, path: _Path) -> None:
        if not isinstance(value, list):
            raise _invalid(path, "Not a valid list.")
        for index, item in enumerate(value):
            item_check(item, _join(path, index))

    return check


def _fields(
    value: Any,
    path: _Path,
    checks: Mapping[str, _Check],
    *,
    required: Collection[str] = (),
    allow_unknown: bool = False,
) -> dict[str, Any]:
    """Check an object: unknown keys first (in body order), then each field in ``checks`` order."""
    _object(value, path)
    if not allow_unknown:
        for key in value:
            if key not in checks:
                raise _invalid(_join(path, key), "Unknown field.")
    for name, check in checks.items():
        field_path = _join(path, name)
        if name not in value:
            if name in required:
                raise _invalid(field_path, "Missing data for required field.")
            continue
        if value[name] is None:
            raise _invalid(field_path, "Field may not be null.")
        check(value[name], field_path)
    return value


# --- the payload ---------------------------------------------------------------------------

_USER_CHECKS: dict[str, _Check] = {
    "email": _sha256_or_list,
    "phone": _sha256_or_list,
    "external_id": _sha256_or_list,
    "first_name": _sha256,
    "last_name": _sha256,
    "city": _sha256,
    "zip_code": _sha256,
    "state": _string,
    "country": _string,
    # Never hashed: TikTok matches these raw.
    "ttclid": _string,
    "ttp": _string,
    "ip": _ip_address,
    "user_agent": _string,
    "locale": _string,
}


_CONTENT_CHECKS: dict[str, _Check] = {
    "content_id": _string,
    "content_name": _string,
    "content_category": _string,
    "brand": _string,
    "quantity": _at_least(_integer, 1),
    "price": _at_least(_number, 0),
}


def _content(value: Any, path: _Path) -> None:
    _fields(value, path, _CONTENT_CHECKS, required=("content_id",))


_PROPERTY_CHECKS: dict[str, _Check] = {
    "currency": _currency,
    "value": _at_least(_number, 0),
    "content_type": _one_of(CONTENT_TYPES),
    "contents": _list_of(_content),
    "content_id": _string,
    "order_id": _string,
    "shop_id": _string,
    "description": _string,
    "query": _string,
}


def _properties(value: Any, path: _Path) -> None:
    _fields(value, path, _PROPERTY_CHECKS, allow_unknown=True)
    if "value" in value and "currency" not in value:
        # A value without a currency cannot be converted, so TikTok cannot report it.
        raise _invalid(_join(path, "currency"), "Required when value is set.")


def _user(value: Any, path: _Path) -> None:
    _fields(value, path, _USER_CHECKS)


_PAGE_CHECKS: dict[str, _Check] = {"url": _string, "referrer": _string}


def _page(value: Any, path: _Path) -> None:
    _fields(value, path, _PAGE_CHECKS)


def _event_name(value: Any, path: _Path) -> None:
    _string(value, path)
    if value not in ALLOWED_EVENTS:
        raise _invalid(path, f"Must be one of: {', '.join(sorted(ALLOWED_EVENTS))}.")


def _event_time(now: float) -> _Check:
    def check(value: Any, path: _Path) -> None:
        _integer(value, path)
        if value >= MILLISECONDS_THRESHOLD:
            raise _invalid(path, "Must be a Unix timestamp in seconds, not milliseconds.")
        if value > now + MAX_FUTURE_SECONDS:
            raise _invalid(path, "Must not be more than 10 minutes in the future.")
        if value < now - MAX_AGE_SECONDS:
            raise _invalid(path, "Must not be older than 7 days.")

    return check


def _event(now: float) -> _Check:
    checks: dict[str, _Check] = {
        "event": _event_name,
        "event_time": _event_time(now),
        "event_id": _non_empty_string,
        "user": _user,
        "properties": _properties,
        "page": _page,
        "limited_data_use": _boolean,
        # App and CRM events carry these; their inner shape is outside a web shop's concern.
        "app": _object,
        "ad": _object,
        "lead": _object,
    }

    def check(value: Any, path: _Path) -> None:
        _fields(value, path, checks, required=("event", "event_time"))

    return check


def _data(now: float) -> _Check:
    event_check = _event(now)

    def check(value: Any, path: _Path) -> None:
        if not isinstance(value, list):
            raise _invalid(path, "Not a valid list.")
        if not 1 <= len(value) <= MAX_BATCH_SIZE:
            raise _invalid(path, f"Length must be between 1 and {MAX_BATCH_SIZE}.")
        for index, item in enumerate(value):
            event_check(item, _join(path, index))

    return check


def _pixel(allowed_pixels: Collection[str] | None) -> _Check:
    def check(value: Any, path: _Path) -> None:
        _non_empty_string(value, path)
        if allowed_pixels is not None and value not in allowed_pixels:
            raise _Rejected(CODE_NO_PERMISSION, f"No permission to operate pixel code: {value}.")

    return check


def _payload(payload: Any, *, allowed_pixels: Collection[str] | None, now: float) -> None:
    if not isinstance(payload, dict):
        raise _Rejected(CODE_INVALID_PARAMETER, "Request body must be a JSON object.")
    _fields(
        payload,
        "",
        {
            "event_source": _one_of(EVENT_SOURCES),
            # Permission is settled before the events are read, as an API gateway would.
            "event_source_id": _pixel(allowed_pixels),
            "partner_name": _string,
            "test_event_code": _string,
            "data": _data(now),
        },
        required=("event_source", "event_source_id", "data"),
    )


def validate_payload(
    payload: Any, *, allowed_pixels: Collection[str] | None = None, now: float
) -> Verdict:
    """Check an already parsed body; ``now`` is the Unix time the event times are judged by."""
    try:
        _payload(payload, allowed_pixels=allowed_pixels, now=now)
    except _Rejected as rejected:
        return rejected.verdict
    return OK


def validate_request(
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    expected_token: str | None,
    allowed_pixels: Collection[str] | None,
    now: float,
    parsed: Any = NOT_PARSED,
) -> Verdict:
    """TikTok's verdict on one track request: the first problem found, or ``OK``.

    ``expected_token`` None accepts any non-empty token; ``allowed_pixels`` None accepts any
    pixel. ``parsed`` is ``parse_body(raw_body)`` if the caller has it already. Order: token,
    Content-Type, JSON, then the payload field by field.
    """
    try:
        _check_headers(headers, expected_token)
        try:
            payload = parse_body(raw_body) if parsed is NOT_PARSED else parsed
        except ValueError as exc:
            raise _Rejected(
                CODE_INVALID_PARAMETER, f"Request body is not valid JSON: {exc}."
            ) from None
        _payload(payload, allowed_pixels=allowed_pixels, now=now)
    except _Rejected as rejected:
        return rejected.verdict
    return OK
