"""How tiktok_tracking reads a demo order: the default adapter, keyed by the order number."""

from tiktok_tracking.adapters import OrderAdapter, clean_order_id


class DemoOrderAdapter(OrderAdapter):
    """The order number ("D1001") is what the shopper and support see, so it is the order_id."""

    def order_id(self):
        return clean_order_id(self.order.number)
