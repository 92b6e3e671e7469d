"""Values crossing into the app: made storable, cut to what their column holds, URLs made private.

Everything here is pure. Cookies, headers, query strings, adapter values and TikTok's answers
are written by others; a value that a column or PostgreSQL cannot take must never cost the
shop its checkout or the event, so it is made to fit on the way in, in this one place.
"""

from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.db import models

# What a URL may keep of its query: the click id TikTok matches on and the campaign
# parameters ad reports group by. Anything else (an email, a phone, a reset token) is dropped.
URL_PARAMETERS_KEPT = frozenset(
    {"ttclid", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id"}
)
# A URL longer than this is no page address a report needs; it is cut before it is parsed.
URL_MAX_LENGTH = 2048
REDACTED_SEGMENT = "redacted"


def storable_text(value):
    """``value`` as text PostgreSQL and JSON can store: no NUL, lone surrogates replaced.

    PostgreSQL refuses NUL in text and in jsonb, and a lone surrogate cannot be encoded as
    UTF-8 at all: either would make the INSERT fail.
    """
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def fit_text(value, max_length=None):
    """``value`` storable and cut to ``max_length`` characters (None: no limit)."""
    text = storable_text(value)
    return text if max_length is None else text[:max_length]


@lru_cache(maxsize=16)
def _text_limits(model):
    """``{attname: max_length or None}`` of the model's text columns."""
    return {
        field.attname: field.max_length
        for field in model._meta.concrete_fields
        if isinstance(field, (models.CharField, models.TextField))
        and not isinstance(field, models.GenericIPAddressField)
    }


def fit_fields(model, values):
    """``values`` (by field name) with every text value storable and within its column."""
    limits = _text_limits(model)
    return {
        name: (
            fit_text(value, limits[name])
            if name in limits and isinstance(value, str) and value
            else value
        )
        for name, value in values.items()
    }


def private_url(url):
    """``url`` without the personal data URLs carry, or None when nothing usable is left.

    Keeps scheme, host and path, and of the query only ``URL_PARAMETERS_KEPT`` (none holding
    an ``@``); drops the fragment and any user:password, and masks path segments holding an
    ``@`` (an email).
    """
    if not url:
        return None
    text = storable_text(url)[:URL_MAX_LENGTH].strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    path = "/".join(
        REDACTED_SEGMENT if "@" in segment or "%40" in segment.lower() else segment
        for segment in parts.path.split("/")
    )
    query = urlencode(
        [
            (key, value)
            for key, value in parse_qsl(parts.query)
            if key in URL_PARAMETERS_KEPT and "@" not in value
        ]
    )
    return urlunsplit((parts.scheme.lower(), netloc, path, query, ""))
