"""The django-payments test shop's app configuration."""

from django.apps import AppConfig


class PaymentsShopConfig(AppConfig):
    name = "tests.payments_shop"
    label = "payments_shop"
    default_auto_field = "django.db.models.BigAutoField"
