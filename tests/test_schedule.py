"""The periodic tasks: one list for django-celery-beat's tables and for celery's own beat, and
the W002 check that something runs them."""

import pytest
from django.apps import apps
from django.conf import settings

from tests.celery_app import app as celery_app
from tiktok_tracking import checks
from tiktok_tracking.schedule import (
    READINESS_TASK_NAME,
    SWEEP_TASK_NAME,
    beat_schedule,
    ensure_periodic_tasks,
    periodic_tasks,
    unscheduled_tasks,
)

EVERY_TASK = {
    "tiktok_tracking.sweep_outbox",
    "tiktok_tracking.purge_personal_data",
    "tiktok_tracking.refresh_rollups",
    "tiktok_tracking.archive_finished",
    "tiktok_tracking.assess_readiness",
    "tiktok_tracking.record_missing_purchases",
}


def test_the_schedule_reads_its_intervals_from_the_shops_settings_dict():
    assert periodic_tasks()[SWEEP_TASK_NAME] == (60, "tiktok_tracking.sweep_outbox")
    assert periodic_tasks()[READINESS_TASK_NAME] == (300, "tiktok_tracking.assess_readiness")
    tasks = periodic_tasks({"SWEEP_INTERVAL": 5, "READINESS": {"ASSESS_INTERVAL": 30}})
    assert tasks[SWEEP_TASK_NAME][0] == 5
    assert tasks[READINESS_TASK_NAME][0] == 30
    assert {task for _, task in tasks.values()} == EVERY_TASK


def test_beat_schedule_is_celerys_shape_and_every_task_is_registered():
    schedule = beat_schedule({"SWEEP_INTERVAL": 5})
    assert schedule[SWEEP_TASK_NAME] == {"task": "tiktok_tracking.sweep_outbox", "schedule": 5.0}
    assert {entry["task"] for entry in schedule.values()} == EVERY_TASK
    # A name beat would send that no worker knows would be dropped as an unregistered task.
    import tiktok_tracking.tasks  # noqa: F401 - what a worker's autodiscovery imports

    assert set(celery_app.tasks) >= EVERY_TASK
    assert unscheduled_tasks(schedule) == []
    del schedule[SWEEP_TASK_NAME]
    assert unscheduled_tasks(schedule) == ["tiktok_tracking.sweep_outbox"]
    assert unscheduled_tasks(None) == sorted(EVERY_TASK)


@pytest.mark.django_db
def test_migrate_writes_the_same_schedule_into_django_celery_beat(settings):
    from django_celery_beat.models import PeriodicTask

    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "SWEEP_INTERVAL": 7}
    ensure_periodic_tasks()
    rows = {
        row.name: (row.interval.every, row.task)
        for row in PeriodicTask.objects.select_related("interval").filter(name__in=periodic_tasks())
    }
    assert rows == periodic_tasks(settings.TIKTOK_TRACKING)
    assert rows[SWEEP_TASK_NAME][0] == 7


@pytest.fixture
def without_django_celery_beat(monkeypatch):
    """As in a shop that did not install the [beat] extra."""
    installed = apps.is_installed
    monkeypatch.setattr(
        apps, "is_installed", lambda name: name != "django_celery_beat" and installed(name)
    )


@pytest.fixture
def celery_beat_schedule():
    """Set the test Celery app's beat_schedule for one test."""
    saved = celery_app.conf.beat_schedule
    yield lambda schedule: setattr(celery_app.conf, "beat_schedule", schedule)
    celery_app.conf.beat_schedule = saved


def w002(errors):
    return [error for error in errors if error.id == "tiktok_tracking.W002"]


def test_django_celery_beat_installed_needs_no_schedule(celery_beat_schedule):
    celery_beat_schedule({})
    assert w002(checks.check_settings()) == []


def test_without_django_celery_beat_or_a_schedule_w002_names_the_missing_tasks(
    without_django_celery_beat, celery_beat_schedule
):
    celery_beat_schedule({})
    [warning] = w002(checks.check_settings())
    assert "tiktok_tracking.sweep_outbox" in warning.msg
    assert "beat_schedule(TIKTOK_TRACKING)" in warning.hint
    assert "pip install 'django-tiktok-tracking[beat]'" in warning.hint
    schedule = beat_schedule(settings.TIKTOK_TRACKING)
    del schedule[READINESS_TASK_NAME]
    celery_beat_schedule(schedule)
    [warning] = w002(checks.check_settings())
    assert "tiktok_tracking.assess_readiness" in warning.msg
    assert "sweep_outbox" not in warning.msg


def test_without_django_celery_beat_beat_schedule_silences_w002(
    without_django_celery_beat, celery_beat_schedule
):
    celery_beat_schedule(beat_schedule(settings.TIKTOK_TRACKING))
    assert w002(checks.check_settings()) == []
    # The shop's own entries beside the app's do not matter.
    celery_beat_schedule(
        {**beat_schedule(), "shop: nightly report": {"task": "shop.report", "schedule": 86400}}
    )
    assert w002(checks.check_settings()) == []
