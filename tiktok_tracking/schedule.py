"""The app's periodic tasks: in django-celery-beat's tables after ``migrate``, or as a schedule."""

from django.apps import apps

from tiktok_tracking import conf

SWEEP_TASK_NAME = "TikTok tracking: sweep outbox"
PURGE_TASK_NAME = "TikTok tracking: purge raw ip and user agent"
ROLLUP_TASK_NAME = "TikTok tracking: roll up the dashboard's closed days"
ARCHIVE_TASK_NAME = "TikTok tracking: archive finished events"
READINESS_TASK_NAME = "TikTok tracking: judge rule readiness"
HEAL_TASK_NAME = "TikTok tracking: record paid orders the outbox never got"


def periodic_tasks(tracking=None):
    """Each periodic task as ``{name: (seconds, task)}``, its intervals read from ``tracking``,
    a ``TIKTOK_TRACKING`` dict (the defaults where it has no value).

    Pure: a settings module can call it through :func:`beat_schedule` before Django is set up.
    """
    tracking = tracking or {}
    readiness = {**conf.readiness_defaults(), **(tracking.get("READINESS") or {})}
    return {
        SWEEP_TASK_NAME: (
            int(tracking.get("SWEEP_INTERVAL", conf.DEFAULTS["SWEEP_INTERVAL"])),
            "tiktok_tracking.sweep_outbox",
        ),
        PURGE_TASK_NAME: (3600, "tiktok_tracking.purge_personal_data"),
        ROLLUP_TASK_NAME: (900, "tiktok_tracking.refresh_rollups"),
        ARCHIVE_TASK_NAME: (3600, "tiktok_tracking.archive_finished"),
        HEAL_TASK_NAME: (
            int(tracking.get("HEAL_INTERVAL", conf.DEFAULTS["HEAL_INTERVAL"])),
            "tiktok_tracking.record_missing_purchases",
        ),
        READINESS_TASK_NAME: (
            int(readiness["ASSESS_INTERVAL"]),
            "tiktok_tracking.assess_readiness",
        ),
    }


def beat_schedule(tracking=None):
    """The periodic tasks as Celery's ``beat_schedule``, for a shop without django-celery-beat:

        CELERY_BEAT_SCHEDULE = beat_schedule(TIKTOK_TRACKING)

    celery's own beat then runs them (django-celery-beat has no release for every supported
    Django: docs/support.md).
    """
    return {
        name: {"task": task, "schedule": float(seconds)}
        for name, (seconds, task) in periodic_tasks(tracking).items()
    }


def unscheduled_tasks(schedule):
    """The app's tasks that a Celery ``beat_schedule`` (a dict of entries) does not run."""
    scheduled = {entry.get("task") for entry in (schedule or {}).values() if hasattr(entry, "get")}
    return sorted(task for _, task in periodic_tasks().values() if task not in scheduled)


def ensure_periodic_tasks(sender=None, using="default", **kwargs):
    """Create (or correct) the periodic schedules, so migrate + beat is all a shop needs."""
    if not apps.is_installed("django_celery_beat"):
        return
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for name, (seconds, task) in periodic_tasks(conf.user_settings()).items():
        interval, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.using(using).update_or_create(
            name=name, defaults={"task": task, "interval": interval}
        )
