"""The browser lane's template tags: the TikTok pixel, funnel events and the purchase.

``{% tiktok_pixel %}`` must come first on the page (in ``<head>``): it defines ``window.ttq``,
which ``{% tiktok_track %}`` and ``{% tiktok_purchase %}`` call. Whenever the pixel may not run
(no pixel id, no request, no consent) every tag renders an HTML comment saying why, so a
developer viewing the page source can tell "off" from "broken".
"""

import logging
import uuid
from functools import lru_cache
from html import escape

from django import template
from django.template.base import kwarg_re
from django.urls import NoReverseMatch, get_resolver, get_script_prefix, get_urlconf, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import get_language

from tiktok_tracking import conf
from tiktok_tracking.adapters import adapter_for, clean_country, clean_value
from tiktok_tracking.charges import apply_charge, charge_suffix
from tiktok_tracking.events import (
    RANDOM_EVENT_ID_PREFIX,
    event_id_for,
    is_valid_event_name,
    order_properties,
    read_order,
)
from tiktok_tracking.exceptions import InvalidOrderData, TikTokTrackingImproperlyConfigured
from tiktok_tracking.hashing import hash_email, hash_external_id, hash_phone
from tiktok_tracking.pixels import configured_pixels, pixels_for_request
from tiktok_tracking.receipts import receipt_token
from tiktok_tracking.script_json import script_json
from tiktok_tracking.standards import ALLOWED_EVENTS, PURCHASE_EVENT_NAMES
from tiktok_tracking.visitor import get_visitor

register = template.Library()
logger = logging.getLogger(__name__)

PIXEL_TEMPLATE = "tiktok_tracking/pixel.html"

# Events rendered without an order (ViewContent, AddToCart...) have nothing to derive an id
# from, and the server lane does not send them, so a random id cannot split a merge.
TRACK_OPTIONS = frozenset({"event_id", "order"})
# TikTok reads these properties as numbers and these as strings ("891" and 891 do not match).
NUMBER_PROPERTIES = frozenset({"value", "price"})
STRING_PROPERTIES = frozenset({"content_id", "order_id", "shop_id"})


# Shared by the tags ---------------------------------------------------------------------------


def comment_text(text) -> str:
    """``text`` made harmless inside an HTML comment: no ``<``, ``>`` or ``--`` to end it early."""
    text = str(text).replace("<", "").replace(">", "")
    while "--" in text:
        text = text.replace("--", "-")
    return text


def _comment(subject, state, reason):
    return format_html(
        "<!-- TikTok {}: {} ({}) -->", comment_text(subject), state, comment_text(reason)
    )


def _browser_lane(context):
    """``(request, decision, off_reason, pixel_ids)``: off_reason is None when the pixel may
    render, for the pixels of the request's site."""
    request = context.get("request")
    if request is None:
        return None, None, "no request in template context", ()
    try:
        pixels = pixels_for_request(request)
    except TikTokTrackingImproperlyConfigured:
        return request, None, "PIXELS is malformed, see manage.py check", ()
    if not pixels:
        reason = "no pixel for this site" if configured_pixels() else "no PIXEL_ID set"
        return request, None, reason, ()
    pixel_ids = tuple(pixel.pixel_id for pixel in pixels)
    decision = get_visitor(request).decision()
    # A held pixel still renders: it queues events and sends them if the visitor agrees.
    if not decision.allowed and not decision.hold:
        return request, decision, decision.reason, pixel_ids
    return request, decision, None, pixel_ids


def _csp_nonce(request):
    # django-csp's attribute; it is lazy, and reading it is what asks for a nonce in the header.
    nonce = getattr(request, "csp_nonce", None)
    return str(nonce) if nonce else None


def _endpoints():
    """``(consent_url, receipt_url)``; None for each the shop's URLconf does not include."""
    # Keyed on the resolver object, which Django replaces when the URLconf changes, and on what
    # else reverse() reads: the script prefix and the language (for i18n_patterns).
    return _reverse_endpoints(get_resolver(get_urlconf()), get_script_prefix(), get_language())


@lru_cache(maxsize=64)
def _reverse_endpoints(resolver, script_prefix, language):
    return tuple(_endpoint(name, resolver.urlconf_name) for name in ("consent", "receipt"))


def _endpoint(name, urlconf):
    try:
        return reverse(f"tiktok_tracking:{name}", urlconf=urlconf)
    except NoReverseMatch:
        # The shop has not included tiktok_tracking.urls: the pixel works without the endpoints.
        return None


def _render(context, template_name, data):
    # The engine rendering the page, not the default one: a shop may configure several.
    tag_template = context.template.engine.get_template(template_name)
    return tag_template.render(template.Context(data, autoescape=True))


def _track_script(nonce, event, encoded_properties, event_id, receipts=()):
    """One event for the pixels: ``ttq.track(event, properties, {event_id})`` and its receipts
    (one per pixel: each pixel's server row learns that the browser sent it).

    It needs ``{% tiktok_pixel %}`` earlier on the page: without the base code there is no
    ``ttq`` to call, and the event is skipped rather than half sent. Built here rather than from
    a template file because it is this small and a page may carry many.
    """
    lines = [
        f'<script nonce="{escape(nonce, quote=True)}">' if nonce else "<script>",
        "if (window.ttq) {",
        f"  window.ttq.track({script_json(event)}, {encoded_properties}, "
        f"{script_json({'event_id': event_id})});",
    ]
    for receipt in receipts:
        lines.append(
            "  if (window.tiktokTracking) "
            f"window.tiktokTracking.sendReceipt({script_json(receipt)});"
        )
    lines += ["}", "</script>"]
    # Every value was encoded by script_json (safe inside a script) or escaped just above.
    return SafeString("\n".join(lines))


def _is_missing(order):
    # A variable the template cannot resolve arrives as "" (string_if_invalid's default).
    return order is None or (isinstance(order, str) and order == "")


def _adapter(order):
    return adapter_for(order)


# {% tiktok_pixel %} ---------------------------------------------------------------------------


def _phone_country(request, country):
    """Where a phone number typed without a country code is read: the customer's ``country``
    (an ISO code, or a django-countries value) when the shop passes a readable one, else the
    visitor's."""
    try:
        # The server lane reads the order's country: passing the same one gives the same digest.
        country = clean_country(getattr(country, "code", country) or None)
    except InvalidOrderData:
        country = None
    return country or get_visitor(request).country


@register.simple_tag(takes_context=True)
def tiktok_pixel(context, email=None, phone=None, external_id=None, country=None):
    """The TikTok base code, consent calls, ``ttq.load``, ``ttq.page`` and ``tiktokTracking``.

    ``email``, ``phone`` and ``external_id`` of a known customer are sent hashed with
    ``ttq.identify`` when consent allows; the raw values never reach the page. ``country`` is
    the customer's, for a phone number typed without a country code.
    """
    request, decision, off_reason, pixel_ids = _browser_lane(context)
    if off_reason:
        return _comment("pixel", "off", off_reason)
    identity = {}
    # A held pixel sends nothing yet, and the visitor may still refuse: keep them out of the page.
    if decision.allowed:
        hashed = (
            ("sha256_email", hash_email(email or None)),
            ("sha256_phone_number", hash_phone(phone or None, _phone_country(request, country))),
            ("external_id", hash_external_id(external_id if external_id != "" else None)),
        )
        identity = {key: value for key, value in hashed if value}
    consent_url, receipt_url = _endpoints()
    # No CSRF token here: masking one costs more than the rest of the tag, and only a visitor
    # who answers the banner needs it; the page fetches it from the consent endpoint then.
    config = {
        "pixelIds": list(pixel_ids),
        "scriptUrl": conf.get("PIXEL_SCRIPT_URL"),
        "hold": decision.hold,
        "limitedDataUse": decision.limited_data_use,
        "consentUrl": consent_url,
        "receiptUrl": receipt_url,
    }
    return _render(
        context,
        PIXEL_TEMPLATE,
        {
            "nonce": _csp_nonce(request),
            "config": script_json(config),
            "pixel_ids": [script_json(pixel_id) for pixel_id in pixel_ids],
            "hold": decision.hold,
            "limited_data_use": decision.limited_data_use,
            "identity": script_json(identity) if identity else "",
        },
    )


# {% tiktok_track "ViewContent" key=value ... %} -----------------------------------------------


@register.tag("tiktok_track")
def do_tiktok_track(parser, token):
    """Compile ``{% tiktok_track "Name" key=value ... [event_id=...] [order=...] %}``."""
    bits = token.split_contents()
    tag_name = bits[0]
    if len(bits) < 2:
        raise template.TemplateSyntaxError(
            f'{tag_name} needs an event name: {{% {tag_name} "ViewContent" %}}'
        )
    event = _literal_event_name(tag_name, bits[1])
    arguments = {}
    for bit in bits[2:]:
        match = kwarg_re.match(bit)
        if not match or not match.group(1):
            raise template.TemplateSyntaxError(
                f"{tag_name} takes key=value arguments after the event name, got {bit!r}"
            )
        key, value = match.groups()
        if key in arguments:
            raise template.TemplateSyntaxError(f"{tag_name} got {key!r} twice")
        arguments[key] = parser.compile_filter(value)
    if arguments.keys() >= TRACK_OPTIONS:
        raise template.TemplateSyntaxError(
            f"{tag_name} takes event_id or order, not both: order derives the event_id"
        )
    return TrackNode(event, arguments)


def _literal_event_name(tag_name, bit):
    # Only a literal can be checked while the template compiles, which is when a typo should show.
    if len(bit) < 2 or bit[0] not in "\"'" or bit[-1] != bit[0]:
        raise template.TemplateSyntaxError(
            f"{tag_name}: the event name must be a quoted literal such as 'ViewContent', got {bit}"
        )
    event = bit[1:-1]
    if not is_valid_event_name(event):
        raise template.TemplateSyntaxError(
            f"{tag_name}: {event!r} is not a TikTok standard event. "
            f"Use one of: {', '.join(sorted(ALLOWED_EVENTS - PURCHASE_EVENT_NAMES))}."
        )
    if event in PURCHASE_EVENT_NAMES:
        # A purchase needs the order's event_id and a receipt, and must follow the payment.
        raise template.TemplateSyntaxError(
            f"{tag_name} does not send purchases: use {{% tiktok_purchase order %}}"
        )
    return event


def _event_properties(values):
    """The tag's keyword values as TikTok properties; empty values are left out."""
    properties = {}
    for key, value in values.items():
        if value is None or (isinstance(value, str) and value == ""):
            continue
        if key in NUMBER_PROPERTIES:
            # The conversion order_properties makes, so "12.50" and Decimal("12.50") send 12.5.
            value = float(clean_value(value, field=key))
        elif key in STRING_PROPERTIES and isinstance(value, (int, uuid.UUID)):
            value = str(value)
        properties[key] = value
    return properties


def _explicit_event_id(value):
    if isinstance(value, bool) or not isinstance(value, (str, int, uuid.UUID)):
        raise InvalidOrderData("event_id", f"must be a string, not {type(value).__name__}")
    event_id = str(value).strip()
    if not event_id:
        raise InvalidOrderData("event_id", "must not be empty")
    return event_id


class TrackNode(template.Node):
    """Renders ``ttq.track(event, properties, {event_id})`` for one funnel event."""

    def __init__(self, event, arguments):
        self.event = event
        self.arguments = arguments

    def render(self, context):
        request, _decision, off_reason, pixel_ids = _browser_lane(context)
        if off_reason:
            return _comment(self.event, "not sent", off_reason)
        values = {key: value.resolve(context) for key, value in self.arguments.items()}
        order = values.pop("order", None)
        explicit_event_id = values.pop("event_id", None)
        properties = {}
        try:
            if "order" in self.arguments:
                if _is_missing(order):
                    return _comment(self.event, "not sent", "no order in template context")
                # The same id and properties the server lane records, so TikTok merges the two.
                facts = read_order(_adapter(order), match_keys=False)
                properties = order_properties(facts)
                event_id = event_id_for(self.event, facts.order_id)
            elif "event_id" in self.arguments:
                event_id = _explicit_event_id(explicit_event_id)
            else:
                event_id = f"{RANDOM_EVENT_ID_PREFIX}{uuid.uuid4().hex}"
        except InvalidOrderData as exc:
            return _comment(self.event, "not sent", f"invalid order data: {exc.field}")
        except Exception:
            logger.exception("Could not read the order for the TikTok %s event", self.event)
            return _comment(self.event, "not sent", "the order could not be read, see the log")
        try:
            properties.update(_event_properties(values))
            encoded_properties = script_json(properties)
        except InvalidOrderData as exc:
            return _comment(self.event, "not sent", f"invalid property: {exc.field}")
        except (TypeError, ValueError):
            return _comment(self.event, "not sent", "a property cannot be sent as JSON")
        # A receipt per pixel, as for the purchase: the checklist's "Pixel fires" sees each key
        # page, and an order's funnel event learns that the browser sent it too.
        receipts = [receipt_token(pixel_id, self.event, event_id) for pixel_id in pixel_ids]
        return _track_script(
            _csp_nonce(request), self.event, encoded_properties, event_id, receipts
        )


# {% tiktok_purchase order %} ------------------------------------------------------------------


@register.simple_tag(takes_context=True)
def tiktok_purchase(context, order, suffix=None, charge=None):
    """The purchase of ``order`` with the server lane's event_id and properties, and its receipt.

    ``charge`` (``tiktok_tracking.charges.upsell(...)``) is a second charge on the same order:
    its own event_id and only its own value and contents, as the server lane sends them.
    ``suffix`` alone gives a second charge the order's own value. Invalid order data renders
    a comment naming the field: tracking must never break the thank-you page.
    """
    request, _decision, off_reason, pixel_ids = _browser_lane(context)
    if off_reason:
        return _comment("purchase", "not sent", off_reason)
    event = conf.get("PURCHASE_EVENT")
    if _is_missing(order):
        return _comment("purchase", "not sent", "no order in template context")
    if getattr(charge, "server_only", False):
        # A renewal has no page of its own; one rendered anyway would be a phantom purchase.
        return _comment("purchase", "not sent", "a renewal is sent by the server lane only")
    try:
        facts = read_order(_adapter(order), match_keys=False)
        suffix = charge_suffix(charge, suffix)
        if charge is not None:
            facts = apply_charge(facts, charge)
        event_id = event_id_for(event, facts.order_id, suffix)
        properties = order_properties(facts)
    except InvalidOrderData as exc:
        return _comment("purchase", "not sent", f"invalid order data: {exc.field}")
    except Exception:
        logger.exception("Could not read the order for the TikTok %s event", event)
        return _comment("purchase", "not sent", "the order could not be read, see the log")
    return _track_script(
        _csp_nonce(request),
        event,
        script_json(properties),
        event_id,
        receipts=[receipt_token(pixel_id, event, event_id) for pixel_id in pixel_ids],
    )
