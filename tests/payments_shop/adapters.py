"""Order adapters of the django-payments test shop."""

from tests.shop.adapters import ShopOrderAdapter
from tests.shop.models import Order
from tiktok_tracking.integrations.payments import PaymentAdapter


class OrderNumberInPaymentAdapter(ShopOrderAdapter):
    """For a shop that keeps the order number in the payment's ``attrs``, with no ForeignKey."""

    @classmethod
    def order_for_payment(cls, payment):
        return Order.objects.get(number=payment.attrs.order_number)


class PaymentWithoutLinesAdapter(PaymentAdapter):
    """For a shop whose payments carry no lines (donations, top-ups)."""

    require_items = False
