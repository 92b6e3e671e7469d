"""Per-day rollups of the tracked events: the dashboard reads closed days without scanning them."""

import logging
from datetime import date, datetime, time, timedelta

from django.db import IntegrityError, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Max, Q, Value
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from tiktok_tracking.events import MATCH_KEYS
from tiktok_tracking.models import EVENT_TABLES, DailyRollup

logger = logging.getLogger(__name__)

# Rows of a closed day still change for a while (retries, resends, consent suppression):
# the refresh rebuilds this many days back from yesterday every time.
RECENT_DAYS = 2
# The longest dashboard period is 30 days; one more covers a period read just after midnight.
FILL_DAYS = 31

GROUP_FIELDS = (
    "event",
    "status",
    "country",
    "consent_status",
    "browser_seen",
    "last_code",
)
KEY_FIELDS = tuple(f"with_{key}" for key in MATCH_KEYS)
COUNT_FIELDS = ("events", *KEY_FIELDS, "with_email_or_phone")


def key_mask(*names):
    return sum(1 << MATCH_KEYS.index(name) for name in names)


def has_key(mask):
    """True when the row's match_keys bitmask carries any of the bits of ``mask``."""
    return GreaterThan(F("match_keys").bitand(mask), 0)


def group_expressions():
    """The TrackedEvent expressions of the rollup's computed key columns, by rollup column.

    Annotated under other names: an annotation may not shadow the model's last_code field.
    """
    return {
        "browser_seen": (
            "rollup_seen",
            ExpressionWrapper(Q(browser_seen_at__isnull=False), output_field=BooleanField()),
        ),
        "last_code": ("rollup_code", Coalesce("last_code", Value(DailyRollup.NO_CODE))),
    }


def group_aggregates(only=None):
    """The rollup's counts over TrackedEvent rows; with ``only``, of the rows it selects."""

    def where(condition=None):
        if only is None:
            return condition
        return only if condition is None else only & condition

    counts = {"events": Count("pk", filter=where())}
    for bit, field_name in enumerate(KEY_FIELDS):
        counts[field_name] = Count("pk", filter=where(has_key(1 << bit)))
    counts["with_email_or_phone"] = Count("pk", filter=where(has_key(key_mask("email", "phone"))))
    counts["example_message"] = Max("last_message", filter=where())
    counts["example_error"] = Max("last_error", filter=where())
    return counts


def grouped_events(queryset, only=None, extra=None, by=None):
    """``queryset`` grouped by the rollup's key columns with the rollup's counts (one query).

    A list of dicts keyed by the rollup's column names; ``extra`` adds aggregates of its own,
    ``by`` more columns to group by ({name: expression}).
    """
    expressions = group_expressions()
    plain = [name for name in GROUP_FIELDS if name not in expressions]
    annotated = {alias: expression for alias, expression in expressions.values()}
    by = by or {}
    groups = (
        queryset.annotate(**annotated, **by)
        .values(*plain, *annotated, *by)
        .annotate(**group_aggregates(only), **(extra or {}))
        .order_by()
    )
    rows = []
    for group in groups:
        for name, (alias, _expression) in expressions.items():
            group[name] = group.pop(alias)
        # SQLite answers the boolean column as 0 or 1.
        group["browser_seen"] = bool(group["browser_seen"])
        rows.append(group)
    return rows


def grouped_period(start, end, **options):
    """The events created in ``[start, end)`` grouped as ``grouped_events`` groups them."""
    return grouped_everywhere(Q(created_at__gte=start, created_at__lt=end), **options)


def grouped_everywhere(condition, *, by=None, **options):
    """``grouped_events`` of the rows matching ``condition`` in the outbox and the archive
    together: a period older than OUTBOX_RETENTION_HOURS has rows in both."""
    keys = (*GROUP_FIELDS, *(by or ()))
    merged = {}
    for model in EVENT_TABLES:
        for group in grouped_events(model.objects.filter(condition), by=by, **options):
            key = tuple(group[name] for name in keys)
            if key in merged:
                _add_group(merged[key], group, keys)
            else:
                merged[key] = group
    return list(merged.values())


def _add_group(total, group, keys):
    for name, value in group.items():
        if name in keys:
            continue
        if name.startswith("example_"):
            total[name] = max(filter(None, (total[name], value)), default=total[name])
        else:
            total[name] += value


def day_bounds(day):
    """The first instant of ``day`` and of the next day, in the site's time zone."""
    start = timezone.make_aware(datetime.combine(day, time.min))
    end = timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))
    return start, end


def _rebuild_day(day, computed_at):
    start, end = day_bounds(day)
    groups = grouped_period(start, end)
    rows = [
        DailyRollup(
            day=day,
            computed_at=computed_at,
            **{name: group[name] for name in GROUP_FIELDS},
            **{name: group[name] for name in COUNT_FIELDS},
            example_message=group["example_message"] or "",
            example_error=group["example_error"] or "",
        )
        for group in groups
    ]
    if not rows:
        # A day without events keeps one empty row, so that it reads as rolled up.
        rows = [DailyRollup(day=day, event="", status="", computed_at=computed_at)]
    DailyRollup.objects.filter(day=day).delete()
    DailyRollup.objects.bulk_create(rows)
    return len(rows)


def rebuild_days(days: list[date]) -> list[date]:
    """Recompute the rollup rows of ``days`` (calendar days), one transaction per day.

    Returns the days rebuilt; a day another process was rebuilding at the same time is
    left to it.
    """
    rebuilt = []
    for day in sorted(set(days)):
        computed_at = timezone.now()
        try:
            with transaction.atomic():
                _rebuild_day(day, computed_at)
        except IntegrityError:
            # A concurrent rebuild inserted the same day first: its rows are as fresh as ours.
            logger.info("TikTok rollups: %s was rebuilt concurrently, skipped", day)
            continue
        rebuilt.append(day)
    return rebuilt


def refresh_rollups(now=None) -> list[date]:
    """Rebuild the last closed days and any closed day of the last month without rollup rows.

    Today is never rolled up: the dashboard computes it live.
    """
    today = timezone.localdate(now or timezone.now())
    closed = [today - timedelta(days=offset) for offset in range(1, FILL_DAYS + 1)]
    present = set(
        DailyRollup.objects.filter(day__gte=closed[-1], day__lt=today)
        .values_list("day", flat=True)
        .distinct()
        .order_by()
    )
    due = set(closed[:RECENT_DAYS]) | {day for day in closed if day not in present}
    return rebuild_days(sorted(due))
