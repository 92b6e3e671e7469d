"""Payments as django-payments shops model them: one that is the order, one that pays an order."""

from django.db import models
from django.urls import reverse
from payments import PurchasedItem
from payments.models import BasePayment


class Payment(BasePayment):
    """A payment that is the shop's order: it carries its own lines."""

    def get_purchased_items(self):
        for line in self.lines.all():
            yield PurchasedItem(
                name=line.name,
                sku=line.sku,
                quantity=line.quantity,
                price=line.price,
                currency=line.currency or self.currency,
            )

    def get_success_url(self):
        return reverse("payments_shop:thanks", args=[self.pk])

    def get_failure_url(self):
        return reverse("payments_shop:failed", args=[self.pk])


class PaymentLine(models.Model):
    payment = models.ForeignKey(Payment, related_name="lines", on_delete=models.CASCADE)
    sku = models.CharField(max_length=32, blank=True)
    name = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    price = models.DecimalField(max_digits=9, decimal_places=2)
    # Blank: the payment's currency.
    currency = models.CharField(max_length=3, blank=True)

    def __str__(self):
        return f"{self.quantity} x {self.sku}"


class OrderPayment(BasePayment):
    """A payment of a test shop order; an order may take several (a declined card, then another)."""

    order = models.ForeignKey("shop.Order", related_name="payments", on_delete=models.PROTECT)

    def get_purchased_items(self):
        for line in self.order.items.all():
            yield PurchasedItem(
                name=line.name,
                sku=line.sku,
                quantity=line.quantity,
                price=line.price,
                currency=self.currency,
            )

    def get_success_url(self):
        return reverse("payments_shop:order_thanks", args=[self.order.number])

    def get_failure_url(self):
        return reverse("payments_shop:failed", args=[self.pk])
