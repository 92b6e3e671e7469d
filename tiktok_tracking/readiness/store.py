"""Stored readiness reports: the periodic task writes one, the feed reads the latest (I/O)."""

from datetime import timedelta

from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.models import ReadinessReport
from tiktok_tracking.readiness import figures, report
from tiktok_tracking.readiness.markets import market_index

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
    reports."""
    from tiktok_tracking.config_log import record_config_if_changed
    from tiktok_tracking.readiness.alerts import record_changes, record_config_changes

    now = now or timezone.now()
    # This process's settings count too, even before the sweeper has run under them.
    config = record_config_if_changed()
    previous = latest()
    stored = ReadinessReport.objects.create(
        computed_at=now, document=build_report(now), config_change_id=config.pk
    )
    if previous is not None:
        record_config_changes(previous.config_change_id, now)
        record_changes(previous.document, stored.document, now)
    ReadinessReport.objects.filter(computed_at__lt=now - KEEP_REPORTS).delete()
    return stored


def latest():
    """The latest stored report, or None before the periodic task has stored one."""
    return ReadinessReport.objects.order_by("-computed_at", "-pk").first()
