"""The consent endpoint for the shop's banner or CMP, and the browser receipt endpoint."""

import json

from django.http import JsonResponse
from django.middleware.csrf import get_token
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from tiktok_tracking import conf
from tiktok_tracking.consent import STATUSES
from tiktok_tracking.receipts import InvalidReceipt, read_receipt_token, record_receipt
from tiktok_tracking.visitor import get_visitor, set_consent_cookie

MAX_RECEIPT_BYTES = 2048
MAX_SOURCE_LENGTH = 32


def _clean_source(value):
    # A label for the log ("banner", "cmp"): printable characters only (PostgreSQL refuses a
    # NUL in text), cut to the column's length.
    source = "".join(char for char in value if char.isprintable())[:MAX_SOURCE_LENGTH].strip()
    return source or "banner"


def declared_length(header):
    """The request's Content-Length as a number (0 when absent), or None when malformed."""
    if header in (None, ""):
        return 0
    # int() would also take " 12", "+12" and "1_2": only plain digits are a length.
    return int(header) if header.isascii() and header.isdigit() else None


def _error(status, message):
    return JsonResponse({"ok": False, "error": message}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def consent(request):
    """POST records the visitor's choice (``status`` = granted or denied) in a cookie and the log.

    CSRF-protected: a third-party page must not be able to grant consent for a visitor. GET
    answers the visitor's current state with the CSRF token the POST needs, so pages need not
    carry one (another origin cannot read the answer).
    """
    from tiktok_tracking.models import ConsentRecord

    if request.method == "GET":
        return _consent_state(request)
    status = request.POST.get("status", "")
    if status not in STATUSES:
        return _error(400, "status must be 'granted' or 'denied'")
    source = _clean_source(request.POST.get("source", ""))
    visitor = get_visitor(request)
    ConsentRecord.objects.create(
        visitor_id=visitor.visitor_id,
        status=status,
        source=source,
        policy_version=str(conf.get("CONSENT_POLICY_VERSION")),
        country=visitor.country or "",
    )
    visitor.consent_status = status
    decision = visitor.decision()
    response = JsonResponse(
        {
            "ok": True,
            "status": status,
            "allowed": decision.allowed,
            "limited_data_use": decision.limited_data_use,
        }
    )
    set_consent_cookie(response, status, secure=request.is_secure())
    return response


def _consent_state(request):
    visitor = get_visitor(request)
    decision = visitor.decision()
    return JsonResponse(
        {
            "ok": True,
            "status": visitor.consent_status,
            "allowed": decision.allowed,
            "limited_data_use": decision.limited_data_use,
            "csrf_token": get_token(request),
        }
    )


@csrf_exempt  # sendBeacon cannot send a CSRF header; the signed token is the proof instead.
@require_POST
def receipt(request):
    """Accept the thank-you page's report that the pixel fired an event."""
    length = declared_length(request.META.get("CONTENT_LENGTH"))
    if length is None:
        return _error(400, "invalid Content-Length")
    if length > MAX_RECEIPT_BYTES:
        return _error(413, "receipt too large")
    body = request.read(MAX_RECEIPT_BYTES + 1)
    if len(body) > MAX_RECEIPT_BYTES:
        return _error(413, "receipt too large")
    try:
        token = json.loads(body.decode("utf-8"))["token"]
        pixel_id, event, event_id = read_receipt_token(token)
    except (ValueError, KeyError, TypeError, InvalidReceipt):
        return _error(400, "invalid receipt")
    if not get_visitor(request).decision().allowed:
        return _error(403, "no consent for tracking")
    if not record_receipt(pixel_id, event, event_id):
        return _error(409, "receipt already recorded")
    return JsonResponse({"ok": True, "event_id": event_id}, status=201)
