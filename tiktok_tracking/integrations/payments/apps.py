"""App configuration of the django-payments integration: connects it when Django is ready."""

from django.apps import AppConfig
from django.core import checks


class TikTokPaymentsConfig(AppConfig):
    name = "tiktok_tracking.integrations.payments"
    # Not "payments": that is django-payments' own label, installed beside this app.
    label = "tiktok_tracking_payments"
    verbose_name = "TikTok tracking for django-payments"

    def ready(self):
        from tiktok_tracking.integrations import payments

        payments.connect()
        checks.register(payments.check_configuration, checks.Tags.compatibility)
