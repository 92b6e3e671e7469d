"""Untrusted text made safe to store, show and log: secrets masked, NULs dropped, length bounded."""

from django.views.decorators.debug import sensitive_variables

from tiktok_tracking.boundaries import storable_text

MASK = "(secret)"
CUT_MARKER = "…"


@sensitive_variables("secrets", "secret")
def redact(text, secrets=(), *, limit=None, patterns=(), marker=CUT_MARKER):
    """``text`` as a string with every secret masked, cut to ``limit`` characters.

    ``patterns`` are ``(compiled regex, replacement)`` pairs for whatever else must not be shown.
    The result can always be stored (see :func:`~tiktok_tracking.boundaries.storable_text`). A
    cut text ends with ``marker`` and still has at most ``limit`` characters.
    """
    text = _as_text(text)
    # Longest first: a token that contains another is masked whole, not in pieces.
    for secret in sorted({secret for secret in secrets if secret}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in patterns:
        text = pattern.sub(replacement, text)
    text = storable_text(text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - len(marker), 0)] + marker[:limit]
    return text


def _as_text(value):
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
