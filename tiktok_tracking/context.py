"""Checkout context: click id, cookies, ip, user agent, page and consent, kept per order."""

import logging
from dataclasses import dataclass, fields

from django.core.exceptions import DisallowedHost
from django.db import connections, router
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.boundaries import fit_fields, fit_text, private_url
from tiktok_tracking.events import BrowserContext
from tiktok_tracking.sql import checkout_context
from tiktok_tracking.visitor import TTP_COOKIE, clean_cookie, client_ip, get_visitor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsentSnapshot:
    """The visitor's consent as it stood at checkout, kept with the order."""

    visitor_id: str = ""
    consent_status: str | None = None
    country: str | None = None
    limited_data_use: bool = False


# No browser sends a longer one; a longer header is cut rather than stored and sent whole.
USER_AGENT_MAX_LENGTH = 1024
LOCALE_MAX_LENGTH = 35


def _first_locale(accept_language):
    first = fit_text(accept_language.split(",", 1)[0].split(";", 1)[0]).strip()
    return first[:LOCALE_MAX_LENGTH] if first and first != "*" else None


def context_from_request(request):
    """The browser context a request carries; empty values become None."""
    meta = request.META
    visitor = get_visitor(request)
    return BrowserContext(
        ttclid=visitor.ttclid,
        ttp=clean_cookie(request.COOKIES.get(TTP_COOKIE)),
        ip=client_ip(
            meta.get("REMOTE_ADDR"),
            meta.get("HTTP_X_FORWARDED_FOR"),
            conf.get("TRUSTED_PROXIES"),
        ),
        user_agent=fit_text(meta.get("HTTP_USER_AGENT") or "", USER_AGENT_MAX_LENGTH) or None,
        # Page addresses keep no email, phone or token from their query: they are stored and
        # sent to TikTok.
        page_url=private_url(_absolute_uri(request)),
        referrer=private_url(meta.get("HTTP_REFERER")),
        locale=_first_locale(meta.get("HTTP_ACCEPT_LANGUAGE", "")),
    )


def _absolute_uri(request):
    try:
        return request.build_absolute_uri()
    except DisallowedHost:
        # A Host header that ALLOWED_HOSTS refuses: the page's address is unknown, the
        # checkout goes on without it.
        return None


def snapshot_from_request(request, country=None):
    """The consent snapshot of the request's visitor (the order's country wins if known)."""
    visitor = get_visitor(request)
    country = country or visitor.country
    decision = visitor.decision()
    return ConsentSnapshot(
        visitor_id=visitor.visitor_id,
        consent_status=visitor.consent_status,
        country=country,
        limited_data_use=decision.limited_data_use,
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


def save_context(order_id, context, snapshot, *, exists=None):
    """Store (or refresh) the context of one order, in one statement and no savepoint.

    ``exists`` False says no row is known to exist: then, if two requests store the same new
    order at once, the first insert stands. Otherwise the row is inserted or refreshed (an
    upsert). This runs inside the shop's payment transaction, and on its checkout page.
    """
    from tiktok_tracking.models import CheckoutContext

    values = fit_fields(
        CheckoutContext,
        {
            "ttclid": context.ttclid or "",
            "ttp": context.ttp or "",
            "ip": context.ip,
            "user_agent": context.user_agent or "",
            "page_url": context.page_url or "",
            "referrer": context.referrer or "",
            "locale": context.locale or "",
            "visitor_id": snapshot.visitor_id,
            "consent_status": snapshot.consent_status or "",
            "country": snapshot.country or "",
            "limited_data_use": snapshot.limited_data_use,
            "captured_at": timezone.now(),
            "personal_data_purged_at": None,
        },
    )
    row = [CheckoutContext(order_id=order_id, **values)]
    features = connections[router.db_for_write(CheckoutContext)].features
    if exists is False and features.supports_ignore_conflicts:
        CheckoutContext.objects.bulk_create(row, ignore_conflicts=True)
    elif exists is not False and features.supports_update_conflicts_with_target:
        CheckoutContext.objects.bulk_create(
            row, update_conflicts=True, unique_fields=["order_id"], update_fields=list(values)
        )
    else:
        CheckoutContext.objects.update_or_create(order_id=order_id, defaults=values)


# What stored_context reads of a CheckoutContext row.
STORED_FIELDS = (
    "ttclid",
    "ttp",
    "ip",
    "user_agent",
    "page_url",
    "referrer",
    "locale",
    "visitor_id",
    "consent_status",
    "country",
    "limited_data_use",
)


def stored_context(order_id):
    """The context and consent snapshot captured for an order, or (None, None)."""
    # Read on every payment: a statement written once (tiktok_tracking.sql), not per order.
    row = checkout_context(order_id, STORED_FIELDS)
    if row is None:
        return None, None
    context = BrowserContext(
        ttclid=row.ttclid or None,
        ttp=row.ttp or None,
        ip=row.ip or None,
        user_agent=row.user_agent or None,
        page_url=row.page_url or None,
        referrer=row.referrer or None,
        locale=row.locale or None,
    )
    snapshot = ConsentSnapshot(
        visitor_id=row.visitor_id,
        consent_status=row.consent_status or None,
        country=row.country or None,
        limited_data_use=row.limited_data_use,
    )
    return context, snapshot
