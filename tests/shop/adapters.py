"""The test shop's order adapter: the default one, reading the order by attribute name."""

from tiktok_tracking.adapters import OrderAdapter


class ShopOrderAdapter(OrderAdapter):
    def order_id(self):
        return self.order.number
