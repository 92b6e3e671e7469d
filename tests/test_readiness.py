"""Rule readiness on real rows: the figures a market's verdict is judged on, and tiktok_health."""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import delivered_purchase_rows, outbox_rows
from tests.shop.models import Order
from tests.test_outbox import make_order, tracking
from tiktok_tracking import rollups
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.readiness import figures as readiness_figures
from tiktok_tracking.readiness import report
from tiktok_tracking.readiness.verdict import (
    INSUFFICIENT_DATA,
    NOT_READY,
    READY,
    judge,
)
from tiktok_tracking.signals import order_refunded

Status = TrackedEvent.Status
HOUR = timedelta(hours=1)


def purchases(count, *, prefix, country="US", hours_ago=0.5, status=Status.DELIVERED, **fields):
    """``count`` purchase rows of ``country`` created ``hours_ago`` in ``status``."""
    created = timezone.now() - timedelta(hours=hours_ago)
    rows = outbox_rows(count, prefix=prefix, country=country)
    # What a checkout with an ad click sends: estimated match quality 6 of 10.
    fields.setdefault("match_keys", rollups.key_mask("email", "ttclid", "ip", "user_agent"))
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=status,
        created_at=created,
        updated_at=created,
        delivered_at=created + timedelta(seconds=3) if status == Status.DELIVERED else None,
        **fields,
    )
    return rows


def market(collected, name, days=7):
    [found] = [f for f in collected if f.market == name and f.window_days == days]
    return found


@pytest.fixture(autouse=True)
def recorded_purchases_only(settings):
    # Paid orders come from the shop's PAID_ORDERS where a test says so; the rest judge on
    # the purchases recorded.
    with tracking(PAID_ORDERS=None):
        yield


@pytest.mark.django_db
def test_a_healthy_market_is_ready():
    seen = timezone.now() - timedelta(minutes=20)
    purchases(24, prefix="ok", browser_seen_at=seen)
    verdict = judge(market(readiness_figures.collect(), "US"))
    assert verdict.verdict == READY, verdict.reasons
    assert verdict.reasons == ("coverage 100% (24 of 24 recorded purchases)",)


@pytest.mark.django_db
def test_a_market_whose_pixel_receipts_stop_is_not_ready_with_that_reason():
    now = timezone.now()
    last_seen = now - timedelta(hours=3)
    purchases(20, prefix="before", hours_ago=4, browser_seen_at=last_seen)
    # The theme release: purchases go on through the server lane, the pixel says nothing.
    purchases(6, prefix="after", hours_ago=1)
    figures = market(readiness_figures.collect(now), "US")
    assert figures.last_receipt_at == last_seen
    assert figures.server_orders_since_last_receipt == 6
    verdict = judge(figures)
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == (
        f"pixel receipts stopped at {last_seen:%Y-%m-%d %H:%M} UTC while 6 server purchases "
        "followed"
    )


@pytest.mark.django_db
def test_a_market_below_the_sample_size_has_insufficient_data():
    purchases(25, prefix="us")
    purchases(5, prefix="ca", country="CA")
    collected = readiness_figures.collect()
    assert judge(market(collected, "US")).verdict == READY
    verdict = judge(market(collected, "CA"))
    assert verdict.verdict == INSUFFICIENT_DATA
    assert verdict.reasons[0] == "5 orders in the last 7 days: below the 20 a verdict needs"


@pytest.mark.django_db
def test_refunds_lower_net_coverage():
    orders = [make_order(f"r{i}", total="50.00") for i in range(25)]
    delivered_purchase_rows([f"r{i}" for i in range(25)])
    before = market(readiness_figures.collect(), "US")
    for order in orders[:4]:
        with transaction.atomic():
            order_refunded.send(sender=Order, order=order)
    with transaction.atomic():
        order_refunded.send(sender=Order, order=orders[4], amount=Decimal("25.00"))
    after = market(readiness_figures.collect(), "US")
    assert after.refunded_orders == pytest.approx(4.5)
    assert after.coverage == before.coverage == 1.0
    assert after.net_coverage == pytest.approx(1 - 4.5 / 25)
    assert after.net_coverage < before.net_coverage == 1.0
    verdict = judge(after)
    assert verdict.reasons[0] == (
        "18% of the tracked value refunded since: TikTok still counts it (net coverage 82%)"
    )


@pytest.mark.django_db
def test_consent_withheld_orders_are_counted_apart():
    purchases(30, prefix="given")
    purchases(15, prefix="denied", status=Status.SUPPRESSED, consent_status="denied")
    purchases(5, prefix="unasked", status=Status.SUPPRESSED)
    figures = market(readiness_figures.collect(), "US")
    counted = (figures.recorded_orders, figures.withheld_orders, figures.tracked_orders)
    assert counted == (50, 20, 30)
    assert figures.withheld_by_reason == {"denied": 15, "not asked": 5}
    assert figures.coverage == 1.0
    assert figures.withheld_share == pytest.approx(0.4)


@pytest.mark.django_db
def test_paid_orders_from_the_shop_are_the_base_of_coverage():
    for i in range(22):
        make_order(f"p{i}", country="US").__class__.objects.filter(number=f"p{i}").update(paid=True)
    purchases(18, prefix="paid")
    with tracking(PAID_ORDERS="tests.shop.reports.paid_orders"):
        figures = market(readiness_figures.collect(), "US")
    assert (figures.paid_orders, figures.tracked_orders) == (22, 18)
    verdict = judge(figures)
    assert verdict.verdict == "caution"
    assert verdict.reasons[0] == "coverage 82% (18 of 22 paid orders): below 90%"


@pytest.mark.django_db
def test_markets_group_countries_and_closed_days_come_from_the_rollups():
    purchases(10, prefix="de", country="DE", hours_ago=72)
    # Today's, even in the first minutes after midnight: the 1-day window is the calendar day.
    since_midnight = timezone.now() - rollups.day_bounds(timezone.localdate())[0]
    purchases(10, prefix="at", country="AT", hours_ago=min(0.1, since_midnight / HOUR / 2))
    rollups.refresh_rollups()
    with tracking(READINESS={"MARKETS": {"DACH": ["DE", "AT", "CH"]}}):
        collected = readiness_figures.collect()
    assert market(collected, "DACH", 7).recorded_orders == 20
    assert market(collected, "DACH", 1).recorded_orders == 10
    assert market(collected, "DACH", 30).recorded_orders == 20
    assert not [f for f in collected if f.market in ("DE", "AT")]


@pytest.mark.django_db
def test_the_figures_take_the_same_queries_for_10_rows_as_for_many():
    def queries():
        with CaptureQueriesContext(connection) as captured:
            readiness_figures.collect()
        return len(captured)

    purchases(10, prefix="few")
    few = queries()
    purchases(400, prefix="many", country="FR")
    purchases(300, prefix="old", country="SE", hours_ago=50)
    rollups.refresh_rollups()
    assert queries() == few


@pytest.mark.django_db
def test_tiktok_health_prints_each_market_and_exits_by_the_worst_verdict():
    purchases(25, prefix="us", browser_seen_at=timezone.now())
    out = StringIO()
    call_command("tiktok_health", stdout=out)
    assert "US         ready" in out.getvalue()

    # A stuck purchase queue: not ready, exit code 1.
    stuck = purchases(3, prefix="stuck", status=Status.PENDING, hours_ago=2)
    assert stuck
    with pytest.raises(SystemExit) as exit_:
        call_command("tiktok_health", stdout=StringIO())
    assert exit_.value.code == 1


@pytest.mark.django_db
def test_tiktok_health_json_follows_its_schema():
    purchases(25, prefix="us", browser_seen_at=timezone.now())
    purchases(3, prefix="ca", country="CA")
    out = StringIO()
    call_command("tiktok_health", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["version"] == report.SCHEMA_VERSION == 1
    assert set(document) == {
        "version",
        "generated_at",
        "window_days",
        "paid_orders_known",
        "thresholds",
        "markets",
    }
    assert [m["market"] for m in document["markets"]] == ["CA", "US"]
    for entry in document["markets"]:
        assert set(entry) == {"market", "verdict", "reasons", "windows", "countries"}
        assert set(entry["windows"]) == {"1", "7", "30"}
        for window in entry["windows"].values():
            assert set(window) == {"verdict", "reasons", "figures"}
            assert set(report.DERIVED) <= set(window["figures"])
    # --strict fails on a market that has too few orders for a verdict.
    with pytest.raises(SystemExit) as exit_:
        call_command("tiktok_health", "--strict", "--market", "CA", stdout=StringIO())
    assert exit_.value.code == 2
    call_command("tiktok_health", "--strict", "--market", "US", stdout=StringIO())


@pytest.mark.parametrize(
    ("readiness", "message"),
    [
        ({"MIN_ORDER": 5}, "unknown key(s) MIN_ORDER"),
        ({"MARKETS": {"DACH": ["DE"], "EU": ["DE", "FR"]}}, "DE is in both 'DACH' and 'EU'"),
        ({"MARKETS": ["DE"]}, "must be a dict of market name to country codes"),
        ({"WINDOW_DAYS": 3}, "WINDOW_DAYS'] must be one of 1, 7, 30, not 3"),
        ({"COVERAGE_CAUTION": "90%"}, "COVERAGE_CAUTION must be a number of at least 0"),
        ({"REFUNDS_CAUTION": 0.5}, "REFUNDS_CAUTION must not be above REFUNDS_NOT_READY"),
        ("strict", "must be a dict, not str"),
        ({"ALERT_WEBHOOK_URL": "https://x.example/hook"}, "without ALERT_WEBHOOK_SECRET"),
        ({"ASSESS_INTERVAL": 0}, "ASSESS_INTERVAL'] must be a whole number of seconds"),
        ({"ASSESS_INTERVAL": 2.5}, "ASSESS_INTERVAL'] must be a whole number of seconds"),
    ],
)
def test_a_bad_readiness_setting_is_e019_naming_it(readiness, message):
    from tiktok_tracking.checks import check_settings

    with tracking(READINESS=readiness):
        errors = [error for error in check_settings() if error.id == "tiktok_tracking.E019"]
    assert len(errors) == 1 and message in errors[0].msg, errors


def test_a_sound_readiness_setting_passes_the_checks():
    from tiktok_tracking.checks import check_settings

    with tracking(READINESS={"MARKETS": {"DACH": ["DE", "AT"]}, "MIN_ORDERS": 50}):
        assert not [e for e in check_settings() if e.id == "tiktok_tracking.E019"]


@pytest.mark.django_db
def test_the_readiness_task_runs_as_often_as_assess_interval_says():
    from django_celery_beat.models import PeriodicTask

    from tiktok_tracking.schedule import READINESS_TASK_NAME, ensure_periodic_tasks

    with tracking(READINESS={"ASSESS_INTERVAL": 60}):
        ensure_periodic_tasks()
    assert PeriodicTask.objects.get(name=READINESS_TASK_NAME).interval.every == 60


@pytest.mark.django_db
def test_a_purchase_sent_after_the_dedup_window_is_counted_twice():
    seen = timezone.now() - timedelta(hours=60)
    purchases(30, prefix="on_time", hours_ago=1, browser_seen_at=timezone.now())
    late = purchases(3, prefix="late", hours_ago=1, browser_seen_at=seen)
    # Resent from the admin two days and more after the purchase the pixel reported.
    TrackedEvent.objects.filter(pk__in=[row.pk for row in late]).update(
        event_time=seen, delivered_at=timezone.now()
    )
    figures = market(readiness_figures.collect(), "US")
    assert (figures.late_resends, figures.unmergeable) == (3, 0)
    verdict = judge(figures)
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == (
        "3 purchases counted twice by TikTok (3 sent after the dedup window): 9% of tracked"
    )


@pytest.mark.django_db
def test_a_grouped_market_lists_each_countrys_own_verdict():
    from tiktok_tracking.readiness import store

    purchases(25, prefix="fr", country="FR", browser_seen_at=timezone.now())
    # Germany's pixel broke three hours ago; France carries the group's coverage.
    purchases(
        10,
        prefix="de",
        country="DE",
        hours_ago=4,
        browser_seen_at=timezone.now() - timedelta(hours=3),
    )
    purchases(4, prefix="de_after", country="DE", hours_ago=1)
    with tracking(READINESS={"MARKETS": {"EU": ["DE", "FR"]}}):
        document = store.build_report()
    [eu] = document["markets"]
    # Pooled, France's receipts hide Germany's silence: the group looks ready.
    assert (eu["market"], eu["verdict"]) == ("EU", "ready")
    assert eu["countries"] == {"DE": "not_ready", "FR": "ready"}


@pytest.mark.django_db
def test_a_purchase_the_pixel_reports_under_another_name_is_counted_twice_in_its_market():
    from tiktok_tracking.receipts import record_receipt

    rows = purchases(30, prefix="ok")
    # The thank-you page's template still says CompletePayment; the server lane sends Purchase.
    for row in rows[:28]:
        assert record_receipt(row.pixel_id, "Purchase", row.event_id)
    for row in rows[28:]:
        assert record_receipt(row.pixel_id, "CompletePayment", row.event_id)
    figures = market(readiness_figures.collect(), "US")
    assert (figures.unmergeable, figures.merged, figures.server_only) == (2, 28, 2)
    assert figures.double_count_share == pytest.approx(2 / 30)
    verdict = judge(figures)
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == (
        "2 purchases counted twice by TikTok (2 reported by the pixel under another event "
        "name): 7% of tracked"
    )


@pytest.mark.django_db
def test_a_spike_of_tiktok_error_codes_turns_a_market_not_ready():
    now = timezone.now()
    purchases(30, prefix="ok", browser_seen_at=now, last_code=0)
    # The token was revoked ten minutes ago: TikTok refuses what the server lane sends since.
    refused = purchases(8, prefix="refused", hours_ago=0.2, status=Status.FAILED, last_code=40001)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in refused]).update(updated_at=now)
    figures = market(readiness_figures.collect(now), "US")
    assert (figures.recent_answers, figures.recent_refusals) == (38, {"40001": 8})
    verdict = judge(figures)
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == (
        "TikTok refused 8 of the 38 purchases it answered in the last 60 min (code 40001: 8)"
    )
    # An hour on, the answers are history: the refused purchases weigh on coverage alone.
    later = market(readiness_figures.collect(now + timedelta(minutes=61)), "US")
    assert (later.recent_answers, later.recently_refused) == (0, 0)
