"""The fresh shop's thank-you page (copied to orders/views.py)."""

from django.shortcuts import get_object_or_404, render
from orders.models import Order


def thanks(request, number):
    order = get_object_or_404(Order, number=number)
    return render(request, "orders/thanks.html", {"order": order})
