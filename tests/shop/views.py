"""The test shop's checkout and payment confirmation, written as a shop developer would."""

from decimal import Decimal

from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt

from tests.shop.models import Order, OrderLine
from tiktok_tracking import capture_context
from tiktok_tracking.signals import payment_completed


@csrf_exempt
def checkout(request):
    data = request.POST
    with transaction.atomic():
        order = Order.objects.create(
            number=data["number"],
            email=data.get("email", ""),
            phone=data.get("phone", ""),
            country=data.get("country", "US"),
            currency=data.get("currency", "USD"),
            total=Decimal(data.get("total", "89.99")),
        )
        OrderLine.objects.create(
            order=order, sku="SKU-123", name="Mug", quantity=1, price=order.total
        )
    capture_context(request, order)
    return JsonResponse({"number": order.number})


def country_from_cookie(request):
    return request.COOKIES.get("country")


def home(request):
    return render(request, "shop/home.html")


def thanks(request, number):
    order = get_object_or_404(Order, number=number)
    return render(request, "shop/thanks.html", {"order": order})


@csrf_exempt
def pay(request, number):
    with transaction.atomic():
        order = get_object_or_404(Order.objects.select_for_update(), number=number)
        order.paid = True
        order.save(update_fields=["paid"])
        payment_completed.send(sender=Order, order=order, request=request)
    return HttpResponse("paid")
