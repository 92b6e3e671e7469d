"""Checkout context: ttclid, _ttp, ip, user agent and page read from a request, kept per order."""

from dataclasses import fields

from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.adapters import get_adapter_class
from tiktok_tracking.events import BrowserContext

TTCLID_PARAM = "ttclid"
TTCLID_COOKIE = "ttclid"
TTP_COOKIE = "_ttp"


def _first_locale(accept_language):
    first = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    return first if first and first != "*" else None


def context_from_request(request):
    """The browser context a request carries; empty values become None."""
    meta = request.META
    return BrowserContext(
        ttclid=request.GET.get(TTCLID_PARAM) or request.COOKIES.get(TTCLID_COOKIE) or None,
        ttp=request.COOKIES.get(TTP_COOKIE) or None,
        ip=meta.get("REMOTE_ADDR") or None,
        user_agent=meta.get("HTTP_USER_AGENT") or None,
        page_url=request.build_absolute_uri(),
        referrer=meta.get("HTTP_REFERER") or None,
        locale=_first_locale(meta.get("HTTP_ACCEPT_LANGUAGE", "")),
    )


def merge_contexts(fresh, stored):
    """The fresh context with gaps filled from the stored one (the click id often lives only in
    the checkout's URL, not on the payment return page)."""
    if stored is None:
        return fresh
    return BrowserContext(
        **{
            field.name: getattr(fresh, field.name) or getattr(stored, field.name)
            for field in fields(BrowserContext)
        }
    )


def save_context(order_id, context):
    """Store (or refresh) the context of one order."""
    from tiktok_tracking.models import CheckoutContext

    CheckoutContext.objects.update_or_create(
        order_id=order_id,
        defaults={
            "ttclid": context.ttclid or "",
            "ttp": context.ttp or "",
            "ip": context.ip,
            "user_agent": context.user_agent or "",
            "page_url": context.page_url or "",
            "referrer": context.referrer or "",
            "locale": context.locale or "",
            "captured_at": timezone.now(),
            "personal_data_purged_at": None,
        },
    )


def stored_context(order_id):
    """The context captured for an order, or None if nothing was captured."""
    from tiktok_tracking.models import CheckoutContext

    row = CheckoutContext.objects.filter(order_id=order_id).first()
    if row is None:
        return None
    return BrowserContext(
        ttclid=row.ttclid or None,
        ttp=row.ttp or None,
        ip=row.ip or None,
        user_agent=row.user_agent or None,
        page_url=row.page_url or None,
        referrer=row.referrer or None,
        locale=row.locale or None,
    )


def capture_context(request, order):
    """Store the browser context of ``order`` for its later purchase event; returns it."""
    adapter = get_adapter_class(conf.get("ORDER_ADAPTER"))(order)
    context = context_from_request(request)
    save_context(adapter.order_id(), context)
    return context
