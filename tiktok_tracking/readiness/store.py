"""Stored readiness reports: the periodic task writes one, the feed reads the latest (I/O)."""

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.models import ReadinessReport
from tiktok_tracking.readiness import figures, report
from tiktok_tracking.readiness.markets import market_index
from tiktok_tracking.replica import reports_read

logger = logging.getLogger(__name__)

# Reports older than this are deleted when a new one is stored: the feed serves the latest,
# and alerts compare it with the one before.
KEEP_REPORTS = timedelta(days=2)


def build_report(now=None, *, paid=True, window_days=None):
    """The readiness report of every market now, under the READINESS settings: each market,
    and each country a market groups with others, judged on the same figures read once."""
    now = now or timezone.now()
    settings = conf.readiness_settings()
    index = market_index(settings["MARKETS"])
    thresholds = conf.readiness_thresholds()
    gathered = figures.gather(now, paid=paid, thresholds=thresholds)
    return report.build(
        figures.assemble(gathered, index),
        thresholds,
        window_days=window_days or settings["WINDOW_DAYS"],
        generated_at=now,
        country_figures=figures.assemble(gathered, {}, only=set(index)),
        index=index,
    )


def assess(now=None):
    """Compute the report (the shop's paid orders read), store it, alert on every market whose
    verdict changed and every watched setting that changed since the last one, drop old
    reports; returns the stored report.

    Two runs may read the same latest report: two beats by accident, or a run slow enough to
    overlap the next. The report names the one it was compared with, and no two reports may
    name the same one, so only the first to store its report raises the alerts; the other
    discards its report, alerts nothing and returns None.
    """
    from tiktok_tracking.config_log import record_config_if_changed
    from tiktok_tracking.readiness.alerts import record_changes, record_config_changes

    # This process's settings count too, even before the sweeper has run under them.
    config = record_config_if_changed()
    previous = latest()
    # Read after the latest report: a report is never older than the one it was compared with.
    now = now or timezone.now()
    # The figures come from the replica where one is configured, once it has caught up.
    with reports_read(batch=True) as read_from:
        document = build_report(now)
    if read_from.replica:
        document["read_from"] = read_from.as_dict()
    try:
        # The report and its alerts stand or fall together.
        with transaction.atomic():
            stored = ReadinessReport.objects.create(
                computed_at=now, document=document, config_change_id=config.pk, previous=previous
            )
            if previous is not None:
                record_config_changes(previous.config_change_id, now)
                record_changes(previous.document, stored.document, now)
    except IntegrityError:
        if previous is None or not was_superseded(previous):
            raise
        logger.info(
            "TikTok readiness: another run compared its report with report %s first; "
            "this run's report is discarded",
            previous.pk,
        )
        return None
    ReadinessReport.objects.filter(computed_at__lt=now - KEEP_REPORTS).delete()
    return stored


def was_superseded(report):
    """Whether another report was compared with ``report``, or it was dropped meanwhile."""
    return not ReadinessReport.objects.filter(pk=report.pk, next_report__isnull=True).exists()


def latest():
    """The latest stored report that no later report was compared with, or None before the
    periodic task has stored one.

    The one without a successor: a report stamped later by a host whose clock runs ahead, but
    already compared with, must not stay "latest", or every run after it would be discarded.
    """
    return (
        ReadinessReport.objects.filter(next_report__isnull=True)
        .order_by("-computed_at", "-pk")
        .first()
    )
