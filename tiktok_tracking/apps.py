"""App configuration: wires the signal receivers and the beat schedule once Django is ready."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TikTokTrackingConfig(AppConfig):
    name = "tiktok_tracking"
    verbose_name = "TikTok tracking"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from tiktok_tracking import checks, receivers, schedule

        checks.register()
        receivers.connect()
        post_migrate.connect(schedule.ensure_periodic_tasks, sender=self)
