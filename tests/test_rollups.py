"""Daily rollups: equal to the live counts, refreshed and filled in, never for today; dashboard."""

from collections import Counter
from datetime import datetime, time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.test_dashboard import create, event, get_page, keys, receipt, spread, superuser
from tiktok_tracking.config_log import record_config_if_changed
from tiktok_tracking.dashboard import dashboard_context
from tiktok_tracking.events import MATCH_KEYS
from tiktok_tracking.models import BrowserReceipt, DailyRollup, TrackedEvent
from tiktok_tracking.rollups import COUNT_FIELDS, GROUP_FIELDS, rebuild_days, refresh_rollups

Status = TrackedEvent.Status


def mixed_rows(prefix="m", n=120):
    """Purchases and checkouts over nine days, every status, country, consent, key and code."""
    statuses = [Status.DELIVERED, Status.FAILED, Status.SUPPRESSED, Status.PENDING, Status.SENDING]
    return [
        event(
            f"order_{prefix}{i}",
            statuses[i % 5],
            event="Purchase" if i % 4 else "InitiateCheckout",
            age=timedelta(days=i % 9, minutes=i),
            country=["US", "DE", "", "FR"][i % 4],
            consent_status=["granted", "denied", ""][i % 3],
            match_keys=(i * 37) % 128,
            last_code=[None, 40001, 0, 40100][i // 5 % 4],
            last_message=f"message {i % 7}" if i % 5 == 1 else "",
            last_error="HTTP 503" if i % 10 == 1 else "",
            browser_seen_at=timezone.now() if i % 3 == 1 else None,
        )
        for i in range(n)
    ]


def expected_groups(rows):
    """{(day, event, status, country, consent, seen, code): {column: count}} counted in Python."""
    groups = {}
    for row in TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]):
        key = (
            timezone.localdate(row.created_at),
            row.event,
            row.status,
            row.country,
            row.consent_status,
            row.browser_seen_at is not None,
            DailyRollup.NO_CODE if row.last_code is None else row.last_code,
        )
        counts = groups.setdefault(key, Counter())
        counts["events"] += 1
        for bit, name in enumerate(MATCH_KEYS):
            counts[f"with_{name}"] += bool(row.match_keys & (1 << bit))
        counts["with_email_or_phone"] += bool(row.match_keys & keys("email", "phone"))
    return groups


def rolled_up(days):
    return {
        (rollup.day, *(getattr(rollup, name) for name in GROUP_FIELDS)): Counter(
            {name: getattr(rollup, name) for name in COUNT_FIELDS if getattr(rollup, name)}
        )
        for rollup in DailyRollup.objects.filter(day__in=days, events__gt=0)
    }


def past_days(count, today=None):
    today = today or timezone.localdate()
    return [today - timedelta(days=n) for n in range(1, count + 1)]


@pytest.mark.django_db
def test_rollups_equal_the_live_counts():
    rows = mixed_rows()
    create(rows)
    days = past_days(8)
    assert rebuild_days(days) == sorted(days)
    expected = {key: counts for key, counts in expected_groups(rows).items() if key[0] in days}
    assert rolled_up(days) == expected
    failed = DailyRollup.objects.filter(status=Status.FAILED, last_code=40001).first()
    assert failed.example_message.startswith("message")
    # Rebuilding again replaces the rows rather than adding to them.
    rebuild_days(days)
    assert rolled_up(days) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("rolled_up", [True, False], ids=["rolled up", "read live"])
def test_dashboard_from_rollups_equals_the_live_rows(rolled_up):
    rows = mixed_rows()
    create(rows)
    BrowserReceipt.objects.bulk_create([receipt(f"order_m{i}") for i in range(0, 120, 3)])
    if rolled_up:
        refresh_rollups()  # as beat does every 15 minutes
    context = dashboard_context(30)
    closed = DailyRollup.objects.filter(day__lt=timezone.localdate()).values("day").distinct()
    # Days not rolled up yet are read from the live rows; the page rolls nothing up itself.
    assert closed.exists() == rolled_up
    assert context["live_days"] == (0 if rolled_up else 29)
    live = TrackedEvent.objects.filter(event="Purchase")
    summary = context["summary"]
    assert summary["recorded"] == live.count() == 90
    for status in ("delivered", "failed", "suppressed"):
        assert summary[status] == live.filter(status=status).count()
    assert summary["in_flight"] == live.filter(status__in=("pending", "sending")).count()
    assert summary["browser_seen"] == live.filter(browser_seen_at__isnull=False).count()
    assert (
        summary["merged"] == live.filter(status="delivered", browser_seen_at__isnull=False).count()
    )
    stale_before = timezone.now() - timedelta(hours=1)
    stale = live.filter(status__in=("pending", "sending"), created_at__lt=stale_before)
    assert summary["stale_in_flight"] == stale.count()
    countries = {row["value"]: row["recorded"] for row in context["countries"]}
    # Every US row is a checkout in this dataset: no purchase group for it.
    assert countries == {c: live.filter(country=c).count() for c in ("DE", "FR", "")}
    consents = {row["value"]: row["recorded"] for row in context["consents"]}
    assert consents == {c: live.filter(consent_status=c).count() for c in ("granted", "denied", "")}
    delivered = live.filter(status="delivered")
    assert context["match_delivered"] == delivered.count()
    for bit, row in enumerate(context["match_keys"]):
        assert row["count"] == sum(1 for r in delivered if r.match_keys & (1 << bit))
    failures = {row["code"]: row["count"] for row in context["failures"]}
    failed = TrackedEvent.objects.filter(status="failed")
    assert failures == dict(Counter(failed.values_list("last_code", flat=True)))
    daily = {day["day"]: day["recorded"] for day in context["daily"]}
    by_day = Counter(timezone.localdate(row.created_at) for row in TrackedEvent.objects.all())
    assert {day: count for day, count in daily.items() if count} == dict(by_day)


@pytest.mark.django_db
def test_stale_purchases_just_after_midnight():
    """At 00:30 the hour before the cut-off is yesterday's: in its rollup but not stale yet."""
    now = timezone.make_aware(datetime.combine(timezone.localdate(), time(0, 30)))
    now += timedelta(days=1)
    rows = [
        event("order_old", Status.PENDING),
        event("order_late", Status.PENDING),
        event("order_today", Status.SENDING),
    ]
    create(rows)
    for event_id, created_at in (
        ("order_old", now - timedelta(hours=2)),
        ("order_late", now - timedelta(minutes=40)),
        ("order_today", now - timedelta(minutes=25)),
    ):
        TrackedEvent.objects.filter(event_id=event_id).update(created_at=created_at)
    summary = dashboard_context(7, now=now)["summary"]
    assert (summary["in_flight"], summary["stale_in_flight"]) == (3, 1)
    assert dashboard_context(1, now=now)["summary"]["stale_in_flight"] == 0
    later = dashboard_context(7, now=now + timedelta(minutes=50))["summary"]
    assert later["stale_in_flight"] == 3


@pytest.mark.django_db
def test_refresh_rebuilds_recent_days_and_fills_missing_ones():
    now = timezone.now()
    today = timezone.localdate(now)
    rows = [event(f"order_{n}", age=timedelta(days=n)) for n in (1, 2, 5)]
    create(rows)
    rebuilt = refresh_rollups(now)
    assert rebuilt == sorted(past_days(31, today))
    assert DailyRollup.objects.filter(day=today - timedelta(days=5)).get().events == 1
    # An empty day keeps one empty row, so that it is not rolled up again and again.
    empty = DailyRollup.objects.get(day=today - timedelta(days=3))
    assert (empty.event, empty.events) == ("", 0)

    create([event(f"order_x{n}", age=timedelta(days=n)) for n in (1, 5)])
    DailyRollup.objects.filter(day=today - timedelta(days=9)).delete()
    rebuilt = refresh_rollups(now)
    assert rebuilt == sorted([today - timedelta(days=n) for n in (1, 2, 9)])
    assert DailyRollup.objects.get(day=today - timedelta(days=1)).events == 2
    # Older days are left as they were: their rows no longer change.
    assert DailyRollup.objects.get(day=today - timedelta(days=5)).events == 1


@pytest.mark.django_db
def test_today_is_never_rolled_up():
    create([event("order_today"), event("order_yesterday", age=timedelta(days=1))])
    refresh_rollups()
    get_page(days="30")
    today = timezone.localdate()
    assert not DailyRollup.objects.filter(day__gte=today).exists()
    assert DailyRollup.objects.filter(day=today - timedelta(days=1), events=1).exists()


@pytest.mark.django_db
def test_dashboard_query_count_is_constant():
    user = superuser()
    create(spread(10, "a"))
    BrowserReceipt.objects.bulk_create([receipt(f"order_a{i}") for i in range(5)])
    # Beat rolls the closed days up and the sweeper records the configuration; pages only read.
    refresh_rollups()
    record_config_if_changed()

    def counts():
        found = []
        for days in ("1", "7", "30"):
            with CaptureQueriesContext(connection) as queries:
                page = get_page(user, days=days)
            found.append(len(queries))
        return found, page

    small, _ = counts()
    create(spread(490, "b"))
    rebuild_days(past_days(6))
    BrowserReceipt.objects.bulk_create([receipt(f"order_b{i}") for i in range(200)])
    large, page = counts()
    assert small == large
    # The same for every period: rollups, today live, receipts (kept and tallied), the
    # configuration, the readiness report and its markets' coverage per day.
    assert len(set(large)) == 1 and large[0] <= 9
    assert page.context_data["summary"]["recorded"] == 500
