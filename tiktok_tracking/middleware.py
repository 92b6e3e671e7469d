"""Middleware: puts the Visitor on ``request.tiktok`` and keeps the first-party cookies."""

from tiktok_tracking import conf
from tiktok_tracking.visitor import (
    ONE_YEAR,
    TTCLID_COOKIE,
    TTCLID_PARAM,
    VISITOR_COOKIE,
    get_visitor,
)


class TikTokTrackingMiddleware:
    """Reads visitor id, consent, country and click id; remembers the click id from an ad."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        visitor = get_visitor(request)
        response = self.get_response(request)
        # Served over HTTPS, the cookies are never sent back over plain HTTP.
        secure = request.is_secure()
        if visitor.is_new:
            response.set_cookie(
                VISITOR_COOKIE,
                visitor.visitor_id,
                max_age=ONE_YEAR,
                samesite="Lax",
                httponly=True,
                secure=secure,
            )
        # A purchase often comes days after the ad click, on another page: keep the click id,
        # where the visitor's consent allows a tracking cookie.
        if (
            visitor.ttclid
            and request.GET.get(TTCLID_PARAM) == visitor.ttclid
            and visitor.decision().allowed
        ):
            response.set_cookie(
                TTCLID_COOKIE,
                visitor.ttclid,
                max_age=int(conf.get("TTCLID_COOKIE_DAYS")) * 24 * 3600,
                samesite="Lax",
                httponly=True,
                secure=secure,
            )
        return response
