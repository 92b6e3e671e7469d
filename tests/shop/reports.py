"""The test shop's paid orders for a period, as a shop hands them to tiktok_reconcile."""

from tests.shop.models import Order


def paid_orders(since, until):
    """Orders paid and placed in ``[since, until)``."""
    return Order.objects.filter(paid=True, created_at__gte=since, created_at__lt=until).order_by(
        "pk"
    )
