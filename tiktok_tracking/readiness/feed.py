"""The readiness feed: GET <mount>/health/, the latest report as JSON for a shop's rule engine.

Read by a machine with a consumer token (``Authorization: Bearer <token>``, created and revoked
in the admin, kept only as a hash) or by staff in a browser session. It serves the report the
periodic task stored (one query, whatever the tables hold) and never writes; before the task
has stored one, it computes one without reading the shop's paid orders. Cacheable: an ``ETag``
of the body and ``Last-Modified`` of the report answer ``If-None-Match`` and
``If-Modified-Since`` with 304.
"""

import hashlib
import json
import secrets

from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.utils.http import http_date
from django.views.decorators.http import require_GET

from tiktok_tracking.models import FeedToken
from tiktok_tracking.readiness import store
from tiktok_tracking.readiness.verdict import WINDOWS
from tiktok_tracking.replica import reports_read

TOKEN_BYTES = 32
HINT_LENGTH = 6
# The staff permission that shows the delivery log shows the feed too.
STAFF_PERMISSION = "tiktok_tracking.view_trackedevent"


def new_token():
    """A fresh consumer token and what is stored of it: ``(token, token_hash, hint)``."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token), token[:HINT_LENGTH]


def hash_token(token):
    # The tokens carry 256 random bits: a plain SHA-256 keeps them safe at rest, with no salt
    # or slow hash needed (those defend guessable passwords).
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(request):
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _refused(status, error, description):
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = f'Bearer realm="tiktok_tracking", error="{error}"'
    return response


def authorize(request):
    """None when the request may read the feed, else the response that refuses it."""
    token = bearer_token(request)
    if token is None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            if user.has_perm(STAFF_PERMISSION):
                return None
            return _refused(403, "insufficient_scope", f"Staff need {STAFF_PERMISSION}.")
        return _refused(401, "invalid_request", "A feed token is needed: Authorization: Bearer.")
    found = FeedToken.objects.filter(token_hash=hash_token(token)).values_list("revoked_at").first()
    if found is None:
        return _refused(401, "invalid_token", "This token is not known.")
    if found[0] is not None:
        return _refused(403, "invalid_token", "This token was revoked.")
    return None


def select(document, markets=None, window=None):
    """``document`` with only ``markets`` and each market's verdict read from ``window``."""
    chosen = [
        market for market in document["markets"] if not markets or market["market"] in markets
    ]
    if window is not None:
        chosen = [
            {**market, **{k: market["windows"][str(window)][k] for k in ("verdict", "reasons")}}
            for market in chosen
        ]
        document = {**document, "window_days": window}
    return {**document, "markets": chosen}


@require_GET
def health(request):
    refused = authorize(request)
    if refused is not None:
        return refused
    window = request.GET.get("window")
    if window is not None:
        if window not in {str(days) for days in WINDOWS}:
            return _refused(400, "invalid_request", "window must be 1, 7 or 30.")
        window = int(window)
    with reports_read() as read_from:
        latest = store.latest()
        if latest is not None:
            document, computed_at = {**latest.document, "stored": True}, latest.computed_at
        else:
            computed_at = timezone.now()
            document = {**store.build_report(computed_at, paid=False), "stored": False}
    if read_from.replica:
        # Where this answer was read: a replica that had not caught up may serve an older report.
        document["served_from"] = read_from.as_dict()
    document = select(document, set(request.GET.getlist("market")), window)
    body = json.dumps(document, sort_keys=True).encode("utf-8")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    last_modified = int(computed_at.timestamp())
    response = HttpResponse(body, content_type="application/json")
    response["ETag"] = etag
    response["Last-Modified"] = http_date(last_modified)
    patch_cache_control(response, private=True, max_age=60)
    patch_vary_headers(response, ("Authorization", "Cookie"))
    return get_conditional_response(
        request, etag=etag, last_modified=last_modified, response=response
    )
