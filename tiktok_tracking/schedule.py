"""The app's periodic tasks, created in django-celery-beat's tables after ``migrate``."""

from django.apps import apps

from tiktok_tracking import conf

SWEEP_TASK_NAME = "TikTok tracking: sweep outbox"
PURGE_TASK_NAME = "TikTok tracking: purge raw ip and user agent"
ROLLUP_TASK_NAME = "TikTok tracking: roll up the dashboard's closed days"
ARCHIVE_TASK_NAME = "TikTok tracking: archive finished events"
READINESS_TASK_NAME = "TikTok tracking: judge rule readiness"


def ensure_periodic_tasks(sender=None, using="default", **kwargs):
    """Create (or correct) the periodic schedules, so migrate + beat is all a shop needs."""
    if not apps.is_installed("django_celery_beat"):
        return
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = {
        SWEEP_TASK_NAME: (int(conf.get("SWEEP_INTERVAL")), "tiktok_tracking.sweep_outbox"),
        PURGE_TASK_NAME: (3600, "tiktok_tracking.purge_personal_data"),
        ROLLUP_TASK_NAME: (900, "tiktok_tracking.refresh_rollups"),
        ARCHIVE_TASK_NAME: (3600, "tiktok_tracking.archive_finished"),
        READINESS_TASK_NAME: (
            int(conf.readiness_settings()["ASSESS_INTERVAL"]),
            "tiktok_tracking.assess_readiness",
        ),
    }
    for name, (seconds, task) in every.items():
        interval, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.using(using).update_or_create(
            name=name, defaults={"task": task, "interval": interval}
        )
