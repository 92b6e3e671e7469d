"""JSON safe to place inside an inline ``<script>``: the one encoder the template tags use."""

import json
from decimal import Decimal

from django.utils.functional import Promise
from django.utils.safestring import SafeString

# With "<" gone no "</script", "<!--" or "<script" can appear; ">" and "&" go too so that the
# output is equally safe in an HTML attribute or an XHTML page (where "]]>" and entities count).
_SCRIPT_ESCAPES = {ord("<"): "\\u003C", ord(">"): "\\u003E", ord("&"): "\\u0026"}


def _encode_other(value):
    if isinstance(value, Decimal):
        # The same conversion order_properties makes, so both lanes send the same number; a
        # non-finite Decimal becomes a float NaN/inf that allow_nan=False then rejects.
        return float(value)
    if isinstance(value, Promise):
        # Lazy translations are strings the moment they are read.
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Built once: json.dumps with these options would build an encoder on every call.
_ENCODER = json.JSONEncoder(
    ensure_ascii=True,
    separators=(",", ":"),
    sort_keys=False,
    allow_nan=False,
    default=_encode_other,
)


def script_json(value) -> SafeString:
    """``value`` as a JSON literal that cannot end the ``<script>`` element it is written into.

    ``ensure_ascii`` leaves only ASCII in the output, which also escapes U+2028 and U+2029 (line
    terminators in older JavaScript). Raises ValueError for NaN or infinity (TikTok rejects them
    and JSON has no spelling for them) and TypeError for values JSON cannot represent.
    """
    return SafeString(_ENCODER.encode(value).translate(_SCRIPT_ESCAPES))
