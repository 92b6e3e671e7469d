"""The demo store: products, a session cart, orders and a fake payment gateway."""

from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "demo_shop.store"
    label = "store"
    verbose_name = "Demo store"
    default_auto_field = "django.db.models.BigAutoField"
