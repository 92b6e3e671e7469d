"""The django-payments test shop's checkout, payment page and thank-you pages."""

from decimal import Decimal

from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from payments import RedirectNeeded

from tests.payments_shop.models import Payment, PaymentLine
from tests.shop.models import Order
from tiktok_tracking import capture_context


@csrf_exempt
def checkout(request):
    """Create the payment (the order) and keep the shopper's browser context for its webhook."""
    data = request.POST
    with transaction.atomic():
        payment = Payment.objects.create(
            variant="default",
            currency=data.get("currency", "EUR"),
            total=Decimal(data.get("total", "59.80")),
            billing_email=data.get("email", ""),
            billing_phone=data.get("phone", ""),
            billing_country_code=data.get("country", "US"),
        )
        PaymentLine.objects.create(
            payment=payment, sku="MUG-1", name="Mug", quantity=2, price=Decimal("19.90")
        )
        PaymentLine.objects.create(
            payment=payment, sku="TEE-2", name="T-shirt", quantity=1, price=Decimal("20.00")
        )
    # After the payment is saved (its pk is the order id), before the shopper leaves for the
    # payment provider.
    capture_context(request, payment)
    return JsonResponse({"payment": payment.pk})


@csrf_exempt
def pay(request, pk):
    """The payment page: django-payments' provider form, as its documentation writes the view."""
    payment = get_object_or_404(Payment, pk=pk)
    try:
        form = payment.get_form(data=request.POST or None)
    except RedirectNeeded as to:
        return redirect(str(to))
    return HttpResponse(form.as_p())


def thanks(request, pk):
    payment = get_object_or_404(Payment, pk=pk)
    return render(request, "payments_shop/thanks.html", {"payment": payment})


def order_thanks(request, number):
    order = get_object_or_404(Order, number=number)
    return render(request, "payments_shop/order_thanks.html", {"order": order})


def failed(request, pk):
    return HttpResponse("payment failed")
