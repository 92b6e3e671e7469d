"""The dashboard's market table: each market's verdict, reasons and coverage per day (pure)."""

from collections import Counter, defaultdict

from tiktok_tracking.dedup import BROWSER_ONLY, MERGED, SERVER_ONLY, SUPPRESSED, dedup_verdict
from tiktok_tracking.readiness.markets import market_of

VERDICT_COLOURS = {
    "ready": "#2e7d32",
    "caution": "#b26a00",
    "not_ready": "#c62828",
    "insufficient_data": "#666",
}
SPARK_WIDTH, SPARK_HEIGHT = 90, 18


def coverage_by_day(groups, index, days):
    """``{market: [coverage or None for each of days]}`` from purchase groups carrying ``day``,
    ``country``, ``status``, ``browser_seen`` and ``events``."""
    counts = defaultdict(Counter)
    for group in groups:
        verdict = dedup_verdict(group["status"], group["browser_seen"])
        key = (market_of(group["country"], index), group["day"])
        counts[key]["recorded"] += group["events"]
        counts[key][verdict] += group["events"]
    series = defaultdict(lambda: [None] * len(days))
    position = {day: i for i, day in enumerate(days)}
    for (market, day), counted in counts.items():
        if day not in position:
            continue
        trackable = counted["recorded"] - counted[SUPPRESSED]
        tracked = counted[MERGED] + counted[SERVER_ONLY] + counted[BROWSER_ONLY]
        series[market][position[day]] = min(tracked / trackable, 1.0) if trackable else None
    return dict(series)


def sparkline(values, width=SPARK_WIDTH, height=SPARK_HEIGHT):
    """SVG polyline points for ``values`` (0 to 1, None for a day without orders), or ""."""
    if len(values) < 2 or all(value is None for value in values):
        return ""
    step = width / (len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{(1 - value) * (height - 2) + 1:.1f}"
        for i, value in enumerate(values)
        if value is not None
    )


def pooled_not_ready(document):
    """``["DE in EU (ready)", ...]``: not-ready countries inside markets that are not (pure)."""
    return [
        f"{country} in {market['market']} ({market['verdict']})"
        for market in document.get("markets", ())
        if market["verdict"] != "not_ready"
        for country, verdict in sorted(market.get("countries", {}).items())
        if verdict == "not_ready"
    ]


def market_rows(document, series):
    """The table's rows from a stored report ``document`` and ``coverage_by_day`` series."""
    window = str(document["window_days"])
    rows = []
    for market in document["markets"]:
        figures = market["windows"].get(window, {}).get("figures", {})
        coverage = figures.get("coverage")
        rows.append(
            {
                "market": market["market"],
                "verdict": market["verdict"],
                "label": (market["verdict"] or "").replace("_", " "),
                "colour": VERDICT_COLOURS.get(market["verdict"], "#666"),
                "coverage": "—" if coverage is None else f"{coverage * 100:.0f}%",
                "match_quality": figures.get("match_quality"),
                "reasons": market["reasons"],
                "spark": sparkline(series.get(market["market"], [])),
            }
        )
    return rows
