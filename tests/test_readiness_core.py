"""Rule readiness, the pure core: match quality scores, markets, and each verdict path."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tiktok_tracking.events import MATCH_KEYS
from tiktok_tracking.readiness import quality
from tiktok_tracking.readiness.markets import UNKNOWN_MARKET, market_index, market_of
from tiktok_tracking.readiness.verdict import (
    CAUTION,
    INSUFFICIENT_DATA,
    NOT_READY,
    READY,
    MarketFigures,
    Thresholds,
    judge,
)

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=timezone.utc)


def figures(**overrides):
    """A healthy market: 100 paid orders, 97 tracked, both lanes merging."""
    base = MarketFigures(
        market="DE",
        window_days=7,
        now=NOW,
        paid_orders=100,
        recorded_orders=100,
        tracked_orders=97,
        merged=90,
        server_only=7,
        latency_p50_seconds=4.0,
        latency_p95_seconds=30.0,
        match_quality=6.5,
        last_receipt_at=NOW - timedelta(minutes=5),
    )
    return replace(base, **overrides)


# --- match quality -----------------------------------------------------------------------------


def test_the_weights_add_up_to_ten_and_every_key_counts():
    assert sum(quality.WEIGHTS.values()) == quality.MAX_SCORE == 10.0
    assert quality.event_score(quality.WEIGHTS) == 10.0
    assert quality.event_score([]) == 0.0
    assert quality.event_score(["email", "ip", "user_agent"]) == 3.5
    assert set(quality.WEIGHTS) == set(MATCH_KEYS)
    assert quality.event_score(["ttclid", "ttclid"]) == 2.5
    with pytest.raises(ValueError, match="unknown match keys: fax"):
        quality.event_score(["email", "fax"])


def test_a_markets_score_is_the_mean_of_its_events_scores():
    events = [["email", "ttclid"], ["email"], ["phone", "ip", "user_agent"], []]
    with_key = {}
    for keys in events:
        for key in keys:
            with_key[key] = with_key.get(key, 0) + 1
    mean = sum(quality.event_score(keys) for keys in events) / len(events)
    assert quality.market_score(len(events), with_key) == round(mean, 1) == 2.6
    assert quality.market_score(0, {}) is None
    with pytest.raises(ValueError, match="email: 5 events with it out of 4"):
        quality.market_score(4, {"email": 5})


def test_the_keys_to_add_first_are_the_heaviest_missing():
    assert quality.missing_keys_by_weight(10, {"email": 10, "ip": 10, "user_agent": 10})[:2] == [
        "ttclid",
        "phone",
    ]
    assert quality.missing_keys_by_weight(1, dict.fromkeys(quality.WEIGHTS, 1)) == []


# --- markets -----------------------------------------------------------------------------------


def test_countries_group_into_markets_and_the_rest_stand_alone():
    index = market_index({"DACH": ["DE", "at", " CH "], "Nordics": ["SE", "NO"]})
    assert market_of("de", index) == market_of("AT", index) == "DACH"
    assert market_of("FR", index) == "FR"
    assert market_of("", index) == market_of(None, index) == UNKNOWN_MARKET
    assert market_of(UNKNOWN_MARKET, index) == UNKNOWN_MARKET


@pytest.mark.parametrize(
    ("markets", "message"),
    [
        ({"DACH": ["DE"], "EU": ["DE"]}, "DE is in both 'DACH' and 'EU'"),
        ({"DACH": ["Germany"]}, "'Germany' is not a two-letter country code"),
        ({"": ["DE"]}, "a market needs a name"),
    ],
)
def test_bad_markets_are_clear_errors(markets, message):
    with pytest.raises(ValueError, match=message):
        market_index(markets)


# --- verdict paths -----------------------------------------------------------------------------


def test_a_healthy_market_is_ready_and_says_why():
    verdict = judge(figures())
    assert verdict.verdict == READY
    assert verdict.reasons == ("coverage 97% (97 of 100 paid orders)",)


def test_below_the_sample_size_the_verdict_is_insufficient_data_never_ready():
    verdict = judge(figures(paid_orders=12, recorded_orders=12, tracked_orders=12))
    assert verdict.verdict == INSUFFICIENT_DATA
    assert verdict.reasons[0] == "12 orders in the last 7 days: below the 20 a verdict needs"
    # A worse ratio-based finding in a small sample stays insufficient data, with its reason.
    verdict = judge(figures(paid_orders=12, recorded_orders=12, tracked_orders=5))
    assert verdict.verdict == INSUFFICIENT_DATA
    assert any(reason.startswith("coverage 42%") for reason in verdict.reasons)


def test_a_market_whose_pixel_receipts_stop_is_not_ready_with_that_reason():
    silent = figures(
        last_receipt_at=datetime(2026, 12, 4, 14, 2, tzinfo=timezone.utc),
        server_orders_since_last_receipt=9,
    )
    verdict = judge(silent)
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == (
        "pixel receipts stopped at 2026-12-04 14:02 UTC while 9 server purchases followed"
    )
    # A sudden failure holds even a small market.
    small = replace(silent, paid_orders=8, recorded_orders=8, tracked_orders=8)
    assert judge(small).verdict == NOT_READY
    # Quiet for an hour with two orders since: not yet a silence.
    recent = figures(last_receipt_at=NOW - timedelta(hours=1), server_orders_since_last_receipt=9)
    assert judge(recent).verdict == READY
    few = replace(silent, server_orders_since_last_receipt=2)
    assert judge(few).verdict == READY


def test_coverage_below_the_thresholds_is_caution_then_not_ready():
    assert judge(figures(tracked_orders=85)).verdict == CAUTION
    verdict = judge(figures(tracked_orders=61))
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == "coverage 61% (61 of 100 paid orders): below 75%"


def test_consent_withheld_orders_are_counted_apart():
    withheld = figures(
        tracked_orders=58,
        withheld_orders=40,
        withheld_by_reason={"denied": 30, "no choice yet": 10},
    )
    assert withheld.coverage == pytest.approx(58 / 60)
    verdict = judge(withheld)
    # Coverage is judged on the orders TikTok could be told of; the withheld share is a
    # reason of its own, not a hole in the coverage.
    assert "coverage 97% (58 of 60 paid orders), 40 withheld by consent apart" in verdict.reasons
    assert verdict.verdict == READY
    heavy = replace(withheld, withheld_orders=45, tracked_orders=53)
    verdict = judge(heavy)
    assert verdict.verdict == CAUTION
    assert verdict.reasons[0].startswith("45% of orders withheld from TikTok by consent (30 denied")


def test_refunds_lower_net_coverage():
    refunded = figures(refunded_orders=14.55)
    assert refunded.coverage == pytest.approx(0.97)
    assert refunded.net_coverage == pytest.approx(0.97 * 0.85)
    verdict = judge(refunded)
    assert verdict.verdict == CAUTION
    assert verdict.reasons[0] == (
        "15% of the tracked value refunded since: TikTok still counts it (net coverage 82%)"
    )
    assert judge(figures(refunded_orders=30)).verdict == NOT_READY


def test_purchases_stuck_on_the_server_lane_turn_the_market_not_ready():
    stuck = figures(oldest_undelivered_at=NOW - timedelta(minutes=20))
    assert judge(stuck).verdict == CAUTION
    stuck = figures(oldest_undelivered_at=NOW - timedelta(minutes=95))
    verdict = judge(stuck)
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0].startswith("oldest undelivered purchase waiting 95 min")


def test_double_counted_purchases_are_a_risk_above_their_thresholds():
    assert judge(figures(unmergeable=1)).verdict == READY
    assert judge(figures(unmergeable=2, late_resends=1)).verdict == CAUTION
    verdict = judge(figures(late_resends=6))
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == (
        "6 purchases counted twice by TikTok (6 sent after the dedup window): 6% of tracked"
    )
    verdict = judge(figures(unmergeable=4, late_resends=2))
    assert verdict.reasons[0] == (
        "6 purchases counted twice by TikTok (4 reported by the pixel under another event name, "
        "2 sent after the dedup window): 6% of tracked"
    )


def test_a_spike_of_refusals_from_tiktok_is_not_ready_whatever_the_sample():
    spike = {"recent_answers": 10, "recent_refusals": {"40001": 4, "40002": 1}}
    verdict = judge(figures(paid_orders=5, recorded_orders=5, tracked_orders=5, **spike))
    assert verdict.verdict == NOT_READY
    assert verdict.reasons[0] == (
        "TikTok refused 5 of the 10 purchases it answered in the last 60 min "
        "(code 40001: 4, code 40002: 1)"
    )
    # Below the share, or below the count, it is noise: a single bad event, a quiet hour.
    assert judge(figures(recent_answers=100, recent_refusals={"40001": 19})).verdict == READY
    assert judge(figures(recent_answers=2, recent_refusals={"40001": 2})).verdict == READY
    limits = Thresholds(error_spike_events=1)
    assert judge(figures(recent_answers=2, recent_refusals={"40001": 2}), limits).verdict == (
        NOT_READY
    )


def test_slow_delivery_and_weak_match_keys_call_for_caution():
    assert judge(figures(latency_p95_seconds=900)).verdict == CAUTION
    verdict = judge(figures(match_quality=3.2))
    assert verdict.verdict == CAUTION
    assert verdict.reasons[0].startswith("estimated match quality 3.2 of 10")


def test_without_the_shops_paid_orders_recorded_purchases_stand_in():
    verdict = judge(figures(paid_orders=None))
    assert verdict.reasons == ("coverage 97% (97 of 100 recorded purchases)",)


def test_thresholds_are_checked():
    Thresholds(coverage_caution=0.8, coverage_not_ready=0.8)
    with pytest.raises(ValueError, match="COVERAGE_NOT_READY must not be above COVERAGE_CAUTION"):
        Thresholds(coverage_caution=0.7)
    with pytest.raises(ValueError, match="MIN_ORDERS must be at least 1"):
        Thresholds(min_orders=0)
    with pytest.raises(ValueError, match="MATCH_QUALITY_CAUTION must be a number of at least 0"):
        Thresholds(match_quality_caution="high")
    assert judge(figures(tracked_orders=85), Thresholds(coverage_caution=0.8)).verdict == READY


# --- the dashboard's market table --------------------------------------------------------------


def test_coverage_per_day_per_market_and_its_sparkline():
    from datetime import date

    from tiktok_tracking.readiness.panel import coverage_by_day, sparkline

    days = [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)]

    def group(day, country, status, seen, events):
        return {
            "day": day,
            "country": country,
            "status": status,
            "browser_seen": seen,
            "events": events,
        }

    series = coverage_by_day(
        [
            group(days[0], "DE", "delivered", True, 9),
            group(days[0], "DE", "failed", False, 1),
            group(days[0], "AT", "suppressed", False, 5),  # withheld: apart
            group(days[2], "DE", "pending", False, 4),
            group(days[2], "DE", "delivered", False, 4),
        ],
        market_index({"DACH": ["DE", "AT"]}),
        days,
    )
    assert series == {"DACH": [0.9, None, 0.5]}
    assert sparkline(series["DACH"], width=90, height=18) == "0.0,2.6 90.0,9.0"
    assert sparkline([None, None]) == sparkline([1.0]) == ""


def test_a_not_ready_country_pooled_in_a_sound_market_fails_the_checklist():
    from tiktok_tracking.dashboard.checklist import (
        FAIL,
        PASS,
        RULES,
        WARN,
        HealthFacts,
    )
    from tiktok_tracking.dashboard.checklist import (
        judge as check,
    )
    from tiktok_tracking.readiness.panel import pooled_not_ready

    document = {
        "markets": [
            {"market": "EU", "verdict": "ready", "countries": {"DE": "not_ready", "FR": "ready"}},
            {"market": "LATAM", "verdict": "not_ready", "countries": {"BR": "not_ready"}},
            {"market": "US", "verdict": "ready", "countries": {}},
        ]
    }
    assert pooled_not_ready(document) == ["DE in EU (ready)"]
    [rule] = [rule for rule in RULES if rule.key == "rule_scope"]
    assert len(RULES) == 10
    item = check(
        rule, HealthFacts("Purchase", readiness_judged=True, pooled_not_ready=("DE in EU (ready)",))
    )
    assert item.status == FAIL and "DE in EU (ready)" in item.detail
    assert check(rule, HealthFacts("Purchase", readiness_judged=True)).status == PASS
    assert check(rule, HealthFacts("Purchase")).status == WARN
