"""A minimal shop used by the test suite: orders, lines, a checkout and a payment view."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "tests.shop"
    label = "shop"
    default_auto_field = "django.db.models.BigAutoField"
