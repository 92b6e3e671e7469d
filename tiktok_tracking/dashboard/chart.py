"""The daily chart's geometry: bar positions and heights as plain numbers for the template."""

import math
from datetime import date

from django.utils.translation import gettext_lazy as _

# Bars keep their colours in dark mode: white-on-colour badges and mid-tone bars read on both.
CHART_SERIES = (
    ("delivered", _("Delivered"), "#2e7d32"),
    ("failed", _("Failed"), "#c62828"),
    ("suppressed", _("Suppressed"), "#8a8a8a"),
)
WIDTH = 720
HEIGHT = 240
LEFT = 48
RIGHT = 12
TOP = 34
BOTTOM = 34
LEGEND_STEP = 110
# About ten date labels at most, so thirty days stay readable.
MAX_DAY_LABELS = 10
# As wide as a week's bars: a day alone (?days=1) is drawn as one day's bar, centred, rather
# than as a block across the whole chart.
MAX_BAR_WIDTH = 66


def nice_ceiling(value):
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5):
        if step * power >= value:
            return step * power
    return 10 * power


def _at(value):
    """A coordinate as the SVG gets it: a tenth of a pixel is enough."""
    return round(value, 1)


def _plain(value):
    """A whole number as an int (axis labels read 50, not 50.0)."""
    return int(value) if value == int(value) else value


def _day_text(day, short=False):
    if not isinstance(day, date):
        return str(day)
    return day.strftime("%m-%d") if short else day.isoformat()


def daily_chart(days):
    """Stacked daily bars of delivered, failed and suppressed events, laid out (pure).

    ``days`` is the daily series; the answer holds only numbers and texts (never markup), which
    the dashboard's chart template draws as an SVG, escaping every text.
    """
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    chart = {
        "width": WIDTH,
        "height": HEIGHT,
        "plot_left": LEFT,
        "plot_right": WIDTH - RIGHT,
        "axis_text_x": LEFT - 6,
        "day_label_y": baseline + 16,
        "legend": [],
        "ticks": [],
        "days": [],
        "ceiling": 0,
        "message": "",
        "message_x": LEFT + plot_width / 2,
        "message_y": TOP + plot_height / 2,
    }
    if not days:
        chart.update(message=_("No days to show."), message_x=WIDTH // 2, message_y=HEIGHT // 2)
        return chart

    totals = [sum(int(day.get(name, 0)) for name, _l, _c in CHART_SERIES) for day in days]
    peak = nice_ceiling(max(totals))
    slot = plot_width / len(days)
    bar_width = min(MAX_BAR_WIDTH, max(1.0, slot * 0.7))
    label_every = max(1, math.ceil(len(days) / MAX_DAY_LABELS))
    chart["ceiling"] = peak
    for index, (_name, label, colour) in enumerate(CHART_SERIES):
        x = LEFT + index * LEGEND_STEP
        chart["legend"].append({"x": x, "text_x": x + 14, "label": label, "colour": colour})
    # Zero, the middle and the top, with faint grid lines.
    chart["ticks"] = [
        {
            "y": _at(baseline - fraction * plot_height),
            "text_y": _at(baseline - fraction * plot_height + 4),
            "value": _plain(peak * fraction),
            "opacity": 0.6 if fraction == 0 else 0.15,
        }
        for fraction in (0, 0.5, 1)
    ]
    for index, (day, total) in enumerate(zip(days, totals, strict=True)):
        x = LEFT + index * slot + (slot - bar_width) / 2
        top = baseline
        segments = []
        for name, label, colour in CHART_SERIES:
            count = int(day.get(name, 0))
            height = plot_height * count / peak
            top -= height
            segments.append(
                {
                    "name": name,
                    "label": str(label).lower(),
                    "colour": colour,
                    "count": count,
                    "y": _at(top),
                    "height": _at(height),
                }
            )
        chart["days"].append(
            {
                "text": _day_text(day.get("day", "")),
                "total": total,
                "x": _at(x),
                "bar_width": _at(bar_width),
                "segments": segments,
                "label": _day_text(day.get("day", ""), short=True)
                if index % label_every == 0
                else "",
                "label_x": _at(x + bar_width / 2),
            }
        )
    if not any(totals):
        chart["message"] = _("No server events in this period.")
    return chart
