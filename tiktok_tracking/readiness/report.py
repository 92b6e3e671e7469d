"""The readiness report: every market's verdicts and figures as one document (schema version 1).

Pure: the figures of ``figures.collect`` in, a JSON-ready dict out. The ``tiktok_health``
command prints it; its schema is documented in docs/readiness.md and checked by the tests.
"""

from dataclasses import asdict

from tiktok_tracking.readiness.verdict import NOT_READY, READY, SEVERITY, judge

SCHEMA_VERSION = 1
# Derived figures the report shows beside the counted ones.
DERIVED = (
    "coverage",
    "net_coverage",
    "cpa_inflation",
    "double_count_share",
    "withheld_share",
    "refunded_share",
)


def _plain(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


def figures_dict(figures):
    counted = asdict(figures)
    for name in ("market", "window_days", "now"):
        counted.pop(name)
    counted.update({name: getattr(figures, name) for name in DERIVED})
    return {name: _plain(value) for name, value in counted.items()}


def build(figures_list, thresholds, *, window_days, generated_at, country_figures=(), index=None):
    """The report of ``figures_list`` (every market and window) judged under ``thresholds``.

    A market's ``verdict`` is the one of its ``window_days`` window; every window keeps its own.
    A market that groups countries (``index``: country -> market) lists each country's own
    verdict over that window under ``countries`` (from ``country_figures``), so that a broken
    country pooled with sound ones shows.
    """
    markets = {}
    for figures in figures_list:
        verdict = judge(figures, thresholds)
        market = markets.setdefault(figures.market, {"market": figures.market, "windows": {}})
        market["windows"][str(figures.window_days)] = {
            **verdict.as_dict(),
            "figures": figures_dict(figures),
        }
        if figures.window_days == window_days:
            market.update(verdict.as_dict())
    for market in markets.values():
        market.setdefault("verdict", None)
        market.setdefault("reasons", [])
        market["countries"] = {}
    for figures in country_figures:
        market = markets.get((index or {}).get(figures.market))
        if market is not None and figures.window_days == window_days:
            market["countries"][figures.market] = judge(figures, thresholds).verdict
    ordered = sorted(
        markets.values(),
        key=lambda market: (-SEVERITY.get(market["verdict"], -1), market["market"]),
    )
    paid_known = any(figures.paid_orders is not None for figures in figures_list)
    return {
        "version": SCHEMA_VERSION,
        "generated_at": generated_at.isoformat(),
        "window_days": window_days,
        "paid_orders_known": paid_known,
        "thresholds": asdict(thresholds),
        "markets": ordered,
    }


def worst(report):
    """The worst market verdict of ``report`` (``ready`` when it has no market)."""
    verdicts = [market["verdict"] for market in report["markets"] if market["verdict"]]
    return max(verdicts, key=SEVERITY.__getitem__, default=READY)


def any_not_ready(report):
    return worst(report) == NOT_READY
