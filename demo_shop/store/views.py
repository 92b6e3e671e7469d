"""The store's pages, the checkout and the fake payment gateway's hosted page and webhook."""

import json
import logging
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.db import OperationalError, transaction
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from demo_shop.store.models import Order, OrderLine, Product
from demo_shop.store.tasks import (
    RETRY_SECONDS,
    SIGNATURE_HEADER,
    deliver_gateway_webhook,
    verify,
)
from tiktok_tracking import capture_context
from tiktok_tracking.signals import payment_completed

logger = logging.getLogger(__name__)

COUNTRY_COOKIE = "country"
COUNTRIES = [("DE", "Germany"), ("FR", "France"), ("US", "United States"), ("BR", "Brazil")]
CART_KEY = "cart"
JUST_ADDED_KEY = "just_added"
ORDERS_KEY = "orders"
GATEWAY_SALT = "demo_shop.gateway"
MAX_QUANTITY = 20


# Country and shared page context ---------------------------------------------------------------


def country_from_cookie(request):
    """The visitor's country as the country switch set it (``COUNTRY_RESOLVER``)."""
    country = request.COOKIES.get(COUNTRY_COOKIE, "").upper()
    return country if country in dict(COUNTRIES) else None


def shop_context(request):
    """What the base template shows on every page: country, consent state and links."""
    visitor = getattr(request, "tiktok", None)
    consent = visitor.consent_status if visitor else None
    decision = visitor.decision() if visitor else None
    return {
        "countries": COUNTRIES,
        "current_country": country_from_cookie(request),
        "consent_status": consent or "not asked",
        "consent_reason": decision.reason if decision else "",
        "cart_count": sum(request.session.get(CART_KEY, {}).values()),
        "sandbox_page_url": settings.SANDBOX_PAGE_URL,
    }


def _safe_next(request, default):
    target = request.POST.get("next") or request.GET.get("next") or default
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


@require_POST
def set_country(request):
    """The country switch: remembers the chosen country in a cookie, as a geo-IP edge would."""
    response = redirect(_safe_next(request, reverse("catalog")))
    country = request.POST.get("country", "").upper()
    if country in dict(COUNTRIES):
        response.set_cookie(COUNTRY_COOKIE, country, max_age=365 * 24 * 3600, samesite="Lax")
    return response


# Catalog and cart --------------------------------------------------------------------------------


def catalog(request):
    return render(request, "store/catalog.html", {"products": Product.objects.all()})


def product(request, sku):
    item = get_object_or_404(Product, sku=sku)
    return render(request, "store/product.html", {"product": item})


class CartLine:
    """One cart line as the templates show it."""

    def __init__(self, product, quantity):
        self.product = product
        self.quantity = quantity
        self.total = product.price * quantity


def cart_lines(request):
    """The session cart's lines, dropping products that no longer exist."""
    cart = request.session.get(CART_KEY, {})
    products = Product.objects.in_bulk(list(cart), field_name="sku")
    return [CartLine(products[sku], qty) for sku, qty in cart.items() if sku in products]


def cart_total(lines):
    return sum((line.total for line in lines), Decimal("0.00"))


@require_POST
def add_to_cart(request):
    item = get_object_or_404(Product, sku=request.POST.get("sku", ""))
    try:
        quantity = max(1, min(MAX_QUANTITY, int(request.POST.get("quantity", "1"))))
    except ValueError:
        quantity = 1
    lines = cart_lines(request)
    # One order has one currency, as TikTok's value/currency pair requires.
    if lines and lines[0].product.currency != item.currency:
        messages.error(request, f"Your cart is in {lines[0].product.currency}: check out first.")
        return redirect("product", sku=item.sku)
    cart = request.session.get(CART_KEY, {})
    cart[item.sku] = min(MAX_QUANTITY, cart.get(item.sku, 0) + quantity)
    request.session[CART_KEY] = cart
    # The cart page reports the addition once, to the pixel, then forgets it.
    request.session[JUST_ADDED_KEY] = {"sku": item.sku, "quantity": quantity}
    return redirect("cart")


@require_POST
def clear_cart(request):
    request.session.pop(CART_KEY, None)
    return redirect("cart")


def cart(request):
    lines = cart_lines(request)
    just_added = request.session.pop(JUST_ADDED_KEY, None)
    added = None
    if just_added:
        added = next((line for line in lines if line.product.sku == just_added["sku"]), None)
        if added is not None:
            added = CartLine(added.product, just_added["quantity"])
    return render(
        request,
        "store/cart.html",
        {"lines": lines, "total": cart_total(lines), "added": added},
    )


# Checkout -----------------------------------------------------------------------------------------


class CheckoutForm(forms.Form):
    email = forms.EmailField()
    phone = forms.CharField(max_length=32, required=False)
    country = forms.ChoiceField(choices=COUNTRIES)


def checkout(request):
    lines = cart_lines(request)
    if not lines:
        messages.info(request, "Your cart is empty.")
        return redirect("catalog")
    form = CheckoutForm(
        request.POST or None, initial={"country": country_from_cookie(request) or "DE"}
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            order = Order.create_numbered(
                email=form.cleaned_data["email"],
                phone=form.cleaned_data["phone"],
                country=form.cleaned_data["country"],
                currency=lines[0].product.currency,
                total=cart_total(lines),
            )
            OrderLine.objects.bulk_create(
                OrderLine(
                    order=order,
                    product=line.product,
                    sku=line.product.sku,
                    name=line.product.name,
                    quantity=line.quantity,
                    price=line.product.price,
                )
                for line in lines
            )
        # The payment will be confirmed by a webhook with no browser behind it: keep the
        # shopper's click id, cookies and consent with the order now.
        capture_context(request, order)
        request.session.pop(CART_KEY, None)
        request.session[ORDERS_KEY] = [*request.session.get(ORDERS_KEY, []), order.number]
        return redirect("handoff", number=order.number)
    return render(
        request, "store/checkout.html", {"form": form, "lines": lines, "total": cart_total(lines)}
    )


def _own_order(request, number):
    """The order, if this browser placed it: order pages show an email and phone number."""
    if number not in request.session.get(ORDERS_KEY, []):
        raise Http404("No such order in this session")
    return get_object_or_404(Order, number=number)


def gateway_token(order):
    return signing.dumps({"order": order.number}, salt=GATEWAY_SALT)


def handoff(request, number):
    """The short "taking you to payment" page: the browser lane's InitiateCheckout fires here."""
    order = _own_order(request, number)
    if order.is_paid:
        return redirect("thanks", number=order.number)
    return render(
        request,
        "store/handoff.html",
        {"order": order, "gateway_url": reverse("gateway_pay", args=[gateway_token(order)])},
    )


def checkout_return(request, number):
    """Where the gateway sends the shopper back; the webhook confirms the payment later."""
    order = _own_order(request, number)
    if not order.is_paid:
        deliver_gateway_webhook.apply_async(
            args=[order.number], countdown=settings.GATEWAY_WEBHOOK_COUNTDOWN
        )
    return redirect("thanks", number=order.number)


def thanks(request, number):
    # The purchase tag renders before the webhook: its event_id depends only on the order.
    return render(request, "store/thanks.html", {"order": _own_order(request, number)})


# The fake payment gateway -------------------------------------------------------------------------


def gateway_pay(request, token):
    """The gateway's hosted payment page (no shop template, no pixel: it is not the shop)."""
    try:
        number = signing.loads(token, salt=GATEWAY_SALT, max_age=3600)["order"]
    except (signing.BadSignature, KeyError, TypeError):
        raise Http404("Unknown or expired payment session") from None
    order = get_object_or_404(Order, number=number)
    if request.method == "POST":
        return redirect("checkout_return", number=order.number)
    return render(request, "store/gateway.html", {"order": order})


@csrf_exempt  # the gateway's server posts here; the HMAC signature is the proof instead
@require_POST
def gateway_webhook(request):
    """Mark the order paid and tell tiktok_tracking, once, however often the notice arrives."""
    if not verify(request.body, request.headers.get(SIGNATURE_HEADER, "")):
        return HttpResponse("bad signature", status=403)
    try:
        notice = json.loads(request.body)
        number = notice["order"]
    except (ValueError, KeyError, TypeError):
        return HttpResponseBadRequest("unreadable notice")
    if notice.get("type") != "payment.succeeded":
        return JsonResponse({"ok": True, "ignored": notice.get("type")})
    try:
        with transaction.atomic():
            order = get_object_or_404(Order.objects.select_for_update(), number=number)
            if order.is_paid:
                return JsonResponse({"ok": True, "order": number, "already_paid": True})
            order.status = Order.Status.PAID
            order.paid_at = timezone.now()
            order.save(update_fields=["status", "paid_at"])
            # No browser behind a webhook: request=None, the context captured at checkout is used.
            payment_completed.send(sender=Order, order=order, request=None)
    except OperationalError as exc:
        if not database_locked(exc):
            raise
        # Nothing was written: the gateway sends the notice again, as it does for any 5xx.
        logger.warning(
            "Gateway webhook for order %s: the database is busy (%s); answered 503, the "
            "gateway retries in %d s",
            number,
            exc,
            RETRY_SECONDS,
        )
        response = HttpResponse("database busy, try again", status=503, content_type="text/plain")
        response["Retry-After"] = str(RETRY_SECONDS)
        return response
    logger.info("Order %s paid", number)
    return JsonResponse({"ok": True, "order": number, "already_paid": False})


def database_locked(exc):
    """Whether ``exc`` is SQLite's lock held by another process past the busy timeout (the web
    server, the worker and beat share one file), rather than a broken database or query."""
    return "database is locked" in str(exc) or "database table is locked" in str(exc)
