"""The fresh shop's orders (copied to orders/models.py): names the default adapter reads."""

from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=32, unique=True)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3)
    email = models.EmailField(blank=True)
    country = models.CharField(max_length=2, blank=True)
    paid = models.BooleanField(default=False)

    def __str__(self):
        return self.number


class OrderLine(models.Model):
    order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
    sku = models.CharField(max_length=32)
    name = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    def __str__(self):
        return f"{self.quantity} x {self.sku}"
