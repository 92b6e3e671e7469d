"""Celery tasks: deliver, sweep lost or stuck rows, purge raw personal data, roll up, archive.

Tasks carry no arguments, so no token or personal data: the broker is readable.
"""

import logging

from celery import shared_task

from tiktok_tracking import archive, delivery, rollups

logger = logging.getLogger(__name__)

# Retries shorter than this are also scheduled as a Celery countdown so they happen on time;
# longer ones wait for the sweeper, because a Redis broker re-delivers a task whose countdown
# outlives its visibility timeout.
MAX_WAKE_UP_COUNTDOWN = 300


@shared_task(name="tiktok_tracking.deliver_events", acks_late=True, ignore_result=True)
def deliver_events():
    """Deliver every due event, whoever asked: a bare wake-up, no ids (the outbox is the queue)."""
    report = delivery.deliver_due_events()
    if report.claimed:
        logger.info(
            "TikTok delivery: %d claimed, %d delivered, %d retrying, %d failed, %d suppressed "
            "in %d request(s)",
            report.claimed,
            report.delivered,
            report.retrying,
            report.failed,
            report.suppressed,
            report.requests,
        )
    if report.more_due:
        deliver_events.apply_async()
    elif report.next_retry_in is not None and report.next_retry_in <= MAX_WAKE_UP_COUNTDOWN:
        deliver_events.apply_async(countdown=report.next_retry_in)
    return None


@shared_task(name="tiktok_tracking.sweep_outbox", acks_late=True, ignore_result=True)
def sweep_outbox():
    """Take back rows from dead workers, deliver rows whose task was lost, log config changes."""
    from tiktok_tracking.config_log import record_config_if_changed

    record_config_if_changed()
    expired = delivery.expire_leases()
    if expired:
        logger.warning("TikTok sweeper: %d lease(s) expired, sending again", expired)
    from tiktok_tracking.models import TrackedEvent

    if TrackedEvent.objects.due().exists():
        deliver_events.apply_async()


@shared_task(name="tiktok_tracking.purge_personal_data", acks_late=True, ignore_result=True)
def purge_personal_data():
    """Blank raw ip and user agent on rows older than RETENTION_DAYS."""
    purged = delivery.purge_personal_data()
    if purged:
        logger.info("TikTok purge: raw ip/user agent/page removed from %d row(s)", purged)


@shared_task(name="tiktok_tracking.refresh_rollups", acks_late=True, ignore_result=True)
def refresh_rollups():
    """Roll up yesterday and the day before again, and any closed day still missing."""
    rebuilt = rollups.refresh_rollups()
    if rebuilt:
        logger.info("TikTok rollups: %d day(s) rebuilt", len(rebuilt))


@shared_task(name="tiktok_tracking.record_missing_purchases", acks_late=True, ignore_result=True)
def record_missing_purchases():
    """Record the purchase of every recently paid order (PAID_ORDERS) the outbox never got."""
    from tiktok_tracking import healing

    report = healing.record_missing_purchases()
    if report is not None and report.recorded:
        logger.info("TikTok scan of paid orders: %d purchase(s) recorded", report.recorded)


@shared_task(name="tiktok_tracking.archive_finished", acks_late=True, ignore_result=True)
def archive_finished():
    """Move finished rows older than OUTBOX_RETENTION_HOURS from the outbox to the archive."""
    moved = archive.archive_finished()
    if moved:
        logger.info("TikTok archive: %d finished row(s) moved out of the outbox", moved)


@shared_task(name="tiktok_tracking.assess_readiness", acks_late=True, ignore_result=True)
def assess_readiness():
    """Judge every market's readiness, store the report the feed serves, send the alerts."""
    from tiktok_tracking.readiness import store

    stored = store.assess()
    # New alerts, and the ones whose webhook delivery is due for another try: posted by a task
    # of their own, on ALERT_QUEUE, so that however slowly the webhook answers, neither this
    # task nor the deliveries queued behind it wait for it.
    publish_alert_run()
    if stored is not None:
        markets = len(stored.document.get("markets", ()))
        logger.info("TikTok readiness: %d market(s) judged", markets)


def publish_alert_run():
    """Publish a run of ``deliver_alerts`` if an alert waits for the webhook. Best effort: the
    next readiness run publishes again."""
    from tiktok_tracking.readiness import alerts

    if not alerts.webhook_due():
        return
    try:
        # retry=False: a broker that is down costs one failed connect, not Celery's retries.
        deliver_readiness_alerts.apply_async(retry=False, **alerts.run_options())
    except Exception:
        logger.warning("Could not publish the TikTok readiness alerts' run", exc_info=True)


@shared_task(name="tiktok_tracking.deliver_alerts", acks_late=True, ignore_result=True)
def deliver_readiness_alerts():
    """POST the readiness alerts due to the webhook, oldest first (READINESS's ALERT_QUEUE)."""
    from tiktok_tracking.readiness import alerts

    sent = alerts.deliver_alerts()
    if sent:
        logger.info("TikTok readiness: %d alert(s) posted to the webhook", sent)
    # The run stopped at RUN_SECONDS with alerts left, new ones came meanwhile, or a failed
    # POST was its alert's last: go on in a run of its own, behind whatever the queue holds
    # now. An alert whose POST failed waits for its retry, and holds the ones behind it.
    publish_alert_run()
