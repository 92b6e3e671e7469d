"""Products and orders, modelled as a plain small shop would."""

import uuid

from django.db import models, transaction

ORDER_NUMBER_OFFSET = 1000


class Product(models.Model):
    class Currency(models.TextChoices):
        EUR = "EUR", "Euro"
        USD = "USD", "US dollar"

    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3, choices=Currency.choices, default=Currency.EUR)
    # The product picture is drawn in SVG from this colour: the demo needs no image files.
    colour = models.CharField(max_length=7, default="#888888", help_text="a CSS hex colour")

    class Meta:
        ordering = ["sku"]

    def __str__(self):
        return f"{self.name} ({self.sku})"


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        PAID = "paid", "paid"

    number = models.CharField(max_length=32, unique=True)
    email = models.EmailField()
    phone = models.CharField(max_length=32, blank=True)
    country = models.CharField(max_length=2)
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"order {self.number}"

    @classmethod
    def create_numbered(cls, **fields):
        """A new order numbered from its primary key ("D1001"), so numbers never collide."""
        with transaction.atomic():
            # A unique placeholder first: the number depends on the key the insert assigns.
            order = cls.objects.create(number=f"new-{uuid.uuid4().hex}", **fields)
            order.number = f"D{ORDER_NUMBER_OFFSET + order.pk}"
            order.save(update_fields=["number"])
        return order

    @property
    def is_paid(self):
        return self.status == self.Status.PAID


class OrderLine(models.Model):
    order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
    product = models.ForeignKey(Product, null=True, on_delete=models.SET_NULL)
    sku = models.CharField(max_length=32)
    name = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    price = models.DecimalField(max_digits=10, decimal_places=2, help_text="unit price")

    def __str__(self):
        return f"{self.quantity} x {self.sku}"

    @property
    def line_total(self):
        return self.price * self.quantity


def paid_orders(since, until):
    """The demo's orders paid in ``[since, until)``, for ``manage.py tiktok_reconcile``."""
    return Order.objects.filter(
        status=Order.Status.PAID, paid_at__gte=since, paid_at__lt=until
    ).order_by("pk")
