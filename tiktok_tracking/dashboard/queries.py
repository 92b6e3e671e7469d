"""The dashboard's reads: rollups of closed days, live event rows, receipts, stored config.

A fixed number of queries, however many rows, countries or days; none of them writes. Closed
days come from DailyRollup; today, and any closed day the periodic task has not rolled up
yet, come from the outbox and the archive grouped the same way (``rollups.grouped_events``).
"""

import operator
from functools import reduce

from django.db.models import Count, Max, Q, Sum, Window
from django.db.models.functions import Coalesce, TruncDate

from tiktok_tracking.dashboard.figures import IN_FLIGHT, Status, day_runs
from tiktok_tracking.models import BrowserReceipt, ConfigChange, DailyRollup, ReceiptTally
from tiktok_tracking.rollups import COUNT_FIELDS, GROUP_FIELDS, day_bounds, grouped_everywhere


def closed_day_counts(first_day, today):
    """Server events (every event name) per closed day and status, from the rollups.

    Every rolled-up day has a row here, even a day without events: the days missing from
    the answer are the ones still to roll up.
    """

    def of_status(status):
        return Coalesce(Sum("events", filter=Q(status=status)), 0)

    return list(
        DailyRollup.objects.filter(day__gte=first_day, day__lt=today)
        .values("day")
        .annotate(
            recorded=Coalesce(Sum("events"), 0),
            delivered=of_status(Status.DELIVERED),
            failed=of_status(Status.FAILED),
            suppressed=of_status(Status.SUPPRESSED),
        )
        .order_by("day")
    )


def closed_day_groups(first_day, today, read_live=()):
    """The rollup groups of the period's closed days, summed over the days.

    The days in ``read_live`` are left out even if a refresh rolled them up meanwhile: this
    page counts them from the live rows.
    """
    rollups = DailyRollup.objects.filter(day__gte=first_day, day__lt=today, events__gt=0)
    if read_live:
        rollups = rollups.exclude(day__in=read_live)
    return list(
        rollups.values(*GROUP_FIELDS)
        .annotate(
            **{name: Sum(name) for name in COUNT_FIELDS},
            example_message=Max("example_message"),
            example_error=Max("example_error"),
        )
        .order_by()
    )


def purchase_day_groups(first_day, today, names):
    """The purchases of the period's rolled-up days by day, country, status and receipt."""
    return list(
        DailyRollup.objects.filter(day__gte=first_day, day__lt=today, event__in=names, events__gt=0)
        .values("day", "country", "status", "browser_seen")
        .annotate(events=Sum("events"))
        .order_by()
    )


def latest_readiness():
    """The latest stored readiness report, or None."""
    from tiktok_tracking.readiness.store import latest

    return latest()


def created_on(days, today):
    """The rows created on ``days``, today among them; from today on, with no end."""
    runs = []
    for first, last in day_runs(days):
        start = day_bounds(first)[0]
        if last >= today:
            runs.append(Q(created_at__gte=start))
        else:
            runs.append(Q(created_at__gte=start, created_at__lt=day_bounds(last)[1]))
    return reduce(operator.or_, runs)


def live_groups(days, today, live_start, stale_before):
    """The rows of ``days`` (today among them) grouped like the rollups and by day.

    The counts are of those rows only; rows between ``live_start`` and today's start that
    belong to a rolled-up day are read too, for the stale figure alone: ``live_start`` is
    before today when the stale cut-off falls on yesterday, and the in-flight rows after the
    cut-off are in yesterday's rollup but not stale yet (``recent_closed``).
    """
    counted = created_on(days, today)
    in_flight = Q(status__in=IN_FLIGHT)
    return grouped_everywhere(
        counted | Q(created_at__gte=live_start),
        only=counted,
        extra={
            "stale": Count("pk", filter=in_flight & counted & Q(created_at__lt=stale_before)),
            "recent_closed": Count("pk", filter=in_flight & ~counted),
        },
        by={"day": TruncDate("created_at")},
    )


def receipt_totals(start, purchase_rows_seen, names):
    """Purchase receipts of the period: how many, how many a server row matches, browser only.

    A receipt and its server row mark each other as they arrive (``browser_seen_at``), so the
    rows seen by the browser are the matched receipts: no per-receipt lookup, which at a
    million rows cost a second.
    """
    total = BrowserReceipt.objects.filter(received_at__gte=start, event__in=names).count()
    matched = min(purchase_rows_seen, total)
    return {"purchase_receipts": total, "matched": matched, "browser_only": total - matched}


def receipt_event_counts(start, first_day):
    """{event name: receipts} of the period, whatever the event: the receipts kept one by one
    and the day tallies of funnel events with a random id."""
    rows = (
        BrowserReceipt.objects.filter(received_at__gte=start)
        .values("event")
        .annotate(count=Count("pk"))
        .order_by()
    )
    counts = {row["event"]: row["count"] for row in rows}
    tallies = (
        ReceiptTally.objects.filter(day__gte=first_day)
        .values("event")
        .annotate(count=Sum("receipts"))
        .order_by()
    )
    for row in tallies:
        counts[row["event"]] = counts.get(row["event"], 0) + row["count"]
    return counts


def stored_config():
    """How many configuration changes are recorded, and the latest one's time and fingerprint.

    Read only: the sweeper records the configuration (``config_log.record_config_if_changed``).
    """
    latest = (
        ConfigChange.objects.values("fingerprint", "recorded_at")
        .annotate(changes=Window(Count("pk")))
        .first()
    )
    if latest is None:
        return {"count": 0, "latest": None, "fingerprint": ""}
    return {
        "count": latest["changes"],
        "latest": latest["recorded_at"],
        "fingerprint": latest["fingerprint"],
    }
