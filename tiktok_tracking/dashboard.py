"""The tracking health dashboard: can the numbers behind the shop's TikTok ad rules be trusted?"""

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from tiktok_tracking import conf, redaction
from tiktok_tracking.config_log import record_config_if_changed
from tiktok_tracking.events import MATCH_KEYS
from tiktok_tracking.models import BrowserReceipt, ConfigChange, DailyRollup, TrackedEvent
from tiktok_tracking.pixels import configured_tokens
from tiktok_tracking.rollups import COUNT_FIELDS, GROUP_FIELDS, grouped_events, rebuild_days
from tiktok_tracking.standards import ALLOWED_EVENTS, PURCHASE_EVENT_NAMES

Status = TrackedEvent.Status

PERIODS = (1, 7, 30)
DEFAULT_PERIOD = 7
TOP_COUNTRIES = 20
# A purchase still queued after this long means the worker or the broker is not running.
STALE_AFTER = timedelta(hours=1)
# Below these shares the checklist complains (see evaluate_checklist for the reasons).
IDS_MATCH_PASS = 95.0
IDS_MATCH_WARN = 80.0
FAILED_PURCHASES_MAX = 1.0
MATCH_QUALITY_PASS = 50.0
EXAMPLE_MESSAGE_LENGTH = 160
COUNT_NAMES = (
    "recorded",
    "delivered",
    "failed",
    "suppressed",
    "in_flight",
    "browser_seen",
    "merged",
)


class CheckStatus(models.TextChoices):
    """The verdict of one checklist item."""

    PASSED = "pass", _("PASS")
    WARNING = "warn", _("WARN")
    FAILED = "fail", _("FAIL")


PASS = CheckStatus.PASSED
WARN = CheckStatus.WARNING
FAIL = CheckStatus.FAILED

NO_CODE_LABEL = _("no code (HTTP / network)")
UNKNOWN_COUNTRY_LABEL = _("unknown")
OTHER_LABEL = _("other")
CONSENT_LABELS = {
    "granted": _("granted"),
    "denied": _("denied"),
    "": _("not asked"),
}
MATCH_KEY_LABELS = {
    "email": _("email (hashed)"),
    "phone": _("phone (hashed)"),
    "external_id": _("external id (hashed)"),
    "ttclid": _("ttclid (ad click id)"),
    "ttp": _("_ttp cookie"),
    "ip": _("IP address"),
    "user_agent": _("user agent"),
}
# Bars keep their colours in dark mode: white-on-colour badges and mid-tone bars read on both.
CHART_SERIES = (
    ("delivered", _("Delivered"), "#2e7d32"),
    ("failed", _("Failed"), "#c62828"),
    ("suppressed", _("Suppressed"), "#8a8a8a"),
)


# --- Pure helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """A count out of a total, shown as a percent, or as a dash when the total is zero."""

    part: int
    whole: int

    @property
    def percent(self):
        if not self.whole:
            return None
        return 100.0 * self.part / self.whole

    def __str__(self):
        percent = self.percent
        return "—" if percent is None else f"{percent:.1f}%"


def period_days(raw):
    """The period in days from the ``?days=`` parameter: 1, 7 or 30; anything else is 7."""
    try:
        days = int(raw)
    except (TypeError, ValueError):
        return DEFAULT_PERIOD
    return days if days in PERIODS else DEFAULT_PERIOD


def period_first_day(days, today):
    """The first calendar day of a period of ``days`` days ending today (today included)."""
    return today - timedelta(days=days - 1)


def purchase_names(purchase_event):
    """Every name a purchase may go by: the configured one and TikTok's current and old names."""
    return frozenset(PURCHASE_EVENT_NAMES | {purchase_event})


def group_figures(counts):
    """The counts of one group of rows with their derived rates (pure)."""
    recorded = counts.get("recorded", 0)
    delivered = counts.get("delivered", 0)
    suppressed = counts.get("suppressed", 0)
    return {
        "recorded": recorded,
        "delivered": delivered,
        "failed": counts.get("failed", 0),
        "suppressed": suppressed,
        "in_flight": counts.get("in_flight", 0),
        "browser_seen": counts.get("browser_seen", 0),
        "merged": counts.get("merged", 0),
        # Suppressed rows were never meant to leave: they do not count against delivery.
        "delivery_rate": Ratio(delivered, recorded - suppressed),
        "dedup_rate": Ratio(counts.get("merged", 0), delivered),
        "suppression_rate": Ratio(suppressed, recorded),
    }


def purchase_summary(totals, browser_only):
    """The purchase figures of the period from the aggregate counts (pure)."""
    summary = group_figures(totals)
    summary["orders_paid"] = summary["recorded"]
    summary["stale_in_flight"] = totals.get("stale_in_flight", 0)
    summary["browser_only"] = browser_only
    # The browser lane's own count: rows it confirmed plus receipts the server never recorded.
    summary["browser_receipts"] = summary["browser_seen"] + browser_only
    summary["failure_rate"] = Ratio(summary["failed"], summary["recorded"])
    return summary


def top_groups(rows, key, label_for, limit=TOP_COUNTRIES):
    """Rows sorted by recorded count, the first ``limit`` kept and the rest folded into "other"."""
    rows = sorted(rows, key=lambda row: (-row.get("recorded", 0), str(row[key])))
    shown = [
        {"value": row[key], "label": label_for(row[key]), **group_figures(row)}
        for row in rows[:limit]
    ]
    rest = rows[limit:]
    if rest:
        folded = {name: sum(row.get(name, 0) for row in rest) for name in COUNT_NAMES}
        label = f"{OTHER_LABEL} ({len(rest)})"
        shown.append({"value": None, "label": label, **group_figures(folded)})
    return shown


def country_label(code):
    return code or UNKNOWN_COUNTRY_LABEL


def consent_label(status):
    return CONSENT_LABELS.get(status, status)


def match_key_coverage(counts):
    """Per match key, how many delivered purchases carried it, out of all delivered (pure)."""
    delivered = counts.get("delivered", 0)
    return [
        {
            "key": key,
            "label": MATCH_KEY_LABELS[key],
            "count": counts.get(f"key_{bit}", 0),
            "ratio": Ratio(counts.get(f"key_{bit}", 0), delivered),
        }
        for bit, key in enumerate(MATCH_KEYS)
    ]


_REDACTIONS = (
    (re.compile(r"[^\s@'\"<>,;:()\[\]]+@[^\s@'\"<>,;:()\[\]]+\.[A-Za-z]{2,}"), "(email)"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "(ip)"),
    (re.compile(r"(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|[0-9a-fA-F:]*::[0-9a-fA-F:]+"), "(ip)"),
    (re.compile(r"\+\d[\d ().-]{5,}\d|\b\d{9,}\b"), "(phone)"),
    (re.compile(r"Mozilla/[^\"'\n]*"), "(user agent)"),
)


def redact(text, secrets=()):
    """``text`` without anything that looks like an email, phone, ip, user agent or a secret.

    TikTok's messages name the bad field and an exception text may quote the bad value, so
    an example message is cleaned before the page shows it.
    """
    return redaction.redact(text, secrets, limit=EXAMPLE_MESSAGE_LENGTH, patterns=_REDACTIONS)


def failure_rows(rows, secrets=()):
    """Failed rows grouped by TikTok code, labelled, with a cleaned example message (pure)."""
    shown = []
    for row in sorted(rows, key=lambda row: (-row["count"], row["last_code"] is None)):
        code = row["last_code"]
        shown.append(
            {
                "code": code,
                "label": NO_CODE_LABEL if code is None else str(code),
                "count": row["count"],
                "example": redact(row.get("example") or row.get("example_error"), secrets),
            }
        )
    return shown


def daily_series(rows, first_day, days):
    """One entry per calendar day of the period, days without rows included as zeros (pure)."""
    by_day = {row["day"]: row for row in rows}
    series = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        row = by_day.get(day, {})
        series.append(
            {
                "day": day,
                "recorded": row.get("recorded", 0),
                **{name: row.get(name, 0) for name, _label, _colour in CHART_SERIES},
            }
        )
    return series


def _day_text(day):
    return day.isoformat() if isinstance(day, date) else str(day)


def _short_day_text(day):
    return day.strftime("%m-%d") if isinstance(day, date) else str(day)


def _nice_ceiling(value):
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5):
        if step * power >= value:
            return step * power
    return 10 * power


CHART_WIDTH = 720
CHART_HEIGHT = 240
CHART_LEFT = 48
CHART_RIGHT = 12
CHART_TOP = 34
CHART_BOTTOM = 34


def daily_chart_svg(days):
    """Stacked daily bars of delivered, failed and suppressed events as an inline SVG (pure).

    Every text written is escaped; the result is a SafeString ready for the template.
    """
    text_style = "font:11px sans-serif;fill:currentColor"
    opening = format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="tiktok-daily-chart" role="img" '
        'viewBox="0 0 {} {}" width="100%" style="max-width:{}px;color:var(--body-fg)" '
        'aria-label="{}">',
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_WIDTH,
        _("Server events per day: delivered, failed, suppressed"),
    )
    if not days:
        return format_html(
            '{}<text x="{}" y="{}" text-anchor="middle" style="{}">{}</text></svg>',
            opening,
            CHART_WIDTH // 2,
            CHART_HEIGHT // 2,
            text_style,
            _("No days to show."),
        )

    plot_width = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    baseline = CHART_TOP + plot_height
    totals = [sum(int(day.get(name, 0)) for name, _l, _c in CHART_SERIES) for day in days]
    peak = _nice_ceiling(max(totals))
    slot = plot_width / len(days)
    bar_width = max(1.0, slot * 0.7)
    # About ten date labels at most, so thirty days stay readable.
    label_every = max(1, math.ceil(len(days) / 10))

    parts = [opening]
    # Legend.
    for index, (_name, label, colour) in enumerate(CHART_SERIES):
        x = CHART_LEFT + index * 110
        parts.append(
            format_html(
                '<rect x="{}" y="8" width="10" height="10" fill="{}"></rect>'
                '<text x="{}" y="17" style="{}">{}</text>',
                x,
                colour,
                x + 14,
                text_style,
                label,
            )
        )
    # Y axis: zero, the middle and the top, with faint grid lines.
    for fraction in (0, 0.5, 1):
        y = baseline - fraction * plot_height
        value = peak * fraction
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" '
                'stroke-opacity="{}"></line>'
                '<text x="{}" y="{}" text-anchor="end" style="{}">{}</text>',
                CHART_LEFT,
                CHART_WIDTH - CHART_RIGHT,
                f"{y:.1f}",
                f"{y:.1f}",
                "0.6" if fraction == 0 else "0.15",
                CHART_LEFT - 6,
                f"{y + 4:.1f}",
                text_style,
                f"{value:g}",
            )
        )
    # One group of stacked bars per day.
    for index, (day, total) in enumerate(zip(days, totals, strict=True)):
        day_text = _day_text(day.get("day", ""))
        x = CHART_LEFT + index * slot + (slot - bar_width) / 2
        summary = ", ".join(
            f"{int(day.get(name, 0))} {str(label).lower()}" for name, label, _c in CHART_SERIES
        )
        bars = []
        top = baseline
        for name, label, colour in CHART_SERIES:
            count = int(day.get(name, 0))
            if not count:
                continue
            bar_height = plot_height * count / peak
            top -= bar_height
            bars.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{}: {} {}</title></rect>",
                    f"{x:.1f}",
                    f"{top:.1f}",
                    f"{bar_width:.1f}",
                    f"{bar_height:.1f}",
                    colour,
                    day_text,
                    count,
                    str(label).lower(),
                )
            )
        label = ""
        if index % label_every == 0:
            label = format_html(
                '<text x="{}" y="{}" text-anchor="middle" style="{}">{}</text>',
                f"{x + bar_width / 2:.1f}",
                baseline + 16,
                text_style,
                _short_day_text(day.get("day", "")),
            )
        parts.append(
            format_html(
                '<g class="chart-day" data-total="{}"><title>{}: {}</title>{}{}</g>',
                total,
                day_text,
                summary,
                format_html_join("", "{}", ((bar,) for bar in bars)),
                label,
            )
        )
    if not any(totals):
        parts.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="middle" style="{}">{}</text>',
                CHART_LEFT + plot_width / 2,
                CHART_TOP + plot_height / 2,
                text_style,
                _("No server events in this period."),
            )
        )
    return format_html("{}</svg>", format_html_join("", "{}", ((part,) for part in parts)))


@dataclass(frozen=True)
class HealthFacts:
    """The numbers the pre-launch checklist is judged on, gathered by the view."""

    purchase_event: str
    receipts: int = 0
    receipt_names: frozenset = field(default_factory=frozenset)
    server_recorded: int = 0
    server_delivered: int = 0
    server_purchase_names: frozenset = field(default_factory=frozenset)
    purchase_receipts: int = 0
    purchase_receipts_matched: int = 0
    purchases_recorded: int = 0
    purchases_failed: int = 0
    purchases_delivered: int = 0
    stale_in_flight: int = 0
    merged: int = 0
    with_email_or_phone: int = 0
    consent_policy_version: str = ""
    opt_in_countries: tuple = ()
    config_changes: int = 0
    config_latest: datetime | None = None


CHECK_COLOURS = {PASS: "#2e7d32", WARN: "#946c00", FAIL: "#c62828"}


@dataclass(frozen=True)
class CheckItem:
    """One checklist line: what was checked, the verdict and a one-line reason."""

    key: str
    label: str
    status: CheckStatus
    detail: str

    @property
    def colour(self):
        return CHECK_COLOURS[self.status]


def _check_pixel_fires(facts):
    label = _("Pixel fires")
    if facts.receipts:
        return CheckItem(
            "pixel_fires",
            label,
            PASS,
            ngettext(
                "%(n)d browser receipt in the period.",
                "%(n)d browser receipts in the period.",
                facts.receipts,
            )
            % {"n": facts.receipts},
        )
    if not facts.server_recorded:
        return CheckItem(
            "pixel_fires",
            label,
            WARN,
            _("No browser receipt and no server event in the period: place a test order."),
        )
    return CheckItem(
        "pixel_fires",
        label,
        FAIL,
        _(
            "The server recorded events but no page reported the pixel firing: check the "
            "pixel tag and the receipt endpoint on the thank-you page."
        ),
    )


def _check_server_delivers(facts):
    label = _("Server lane delivers")
    if facts.server_delivered:
        detail = ngettext(
            "%(n)d event delivered to the Events API in the period.",
            "%(n)d events delivered to the Events API in the period.",
            facts.server_delivered,
        ) % {"n": facts.server_delivered}
        return CheckItem("server_delivers", label, PASS, detail)
    if not facts.server_recorded:
        return CheckItem(
            "server_delivers", label, WARN, _("No server event recorded in the period.")
        )
    return CheckItem(
        "server_delivers",
        label,
        FAIL,
        _(
            "Events were recorded but none was delivered: check the access token, the worker "
            "and the failures below."
        ),
    )


def _check_ids_match(facts):
    label = _("Event ids match")
    ratio = Ratio(facts.purchase_receipts_matched, facts.purchase_receipts)
    if ratio.percent is None:
        return CheckItem(
            "ids_match", label, WARN, _("No purchase receipt from the browser to compare yet.")
        )
    detail = _(
        "%(matched)d of %(total)d purchase receipts (%(share)s) have a server row with the "
        "same event_id."
    ) % {"matched": ratio.part, "total": ratio.whole, "share": ratio}
    if ratio.percent >= IDS_MATCH_PASS:
        return CheckItem("ids_match", label, PASS, detail)
    # A few misses are webhooks that have not arrived yet; many mean the lanes build ids apart.
    status = WARN if ratio.percent >= IDS_MATCH_WARN else FAIL
    return CheckItem("ids_match", label, status, detail)


def _check_names_match(facts):
    label = _("Event names match")
    names = purchase_names(facts.purchase_event)
    other_purchase_names = sorted((facts.receipt_names & names) - {facts.purchase_event})
    if other_purchase_names:
        return CheckItem(
            "names_match",
            label,
            FAIL,
            _(
                "The pixel sent the purchase as %(browser)s but the server sends %(server)s: "
                "TikTok will not merge them."
            )
            % {"browser": ", ".join(other_purchase_names), "server": facts.purchase_event},
        )
    unknown = sorted(facts.receipt_names - ALLOWED_EVENTS - {facts.purchase_event})
    if unknown:
        return CheckItem(
            "names_match",
            label,
            WARN,
            _("The pixel sent events TikTok does not define: %(names)s.")
            % {"names": ", ".join(unknown)},
        )
    stale_server = sorted(facts.server_purchase_names - {facts.purchase_event})
    if stale_server:
        return CheckItem(
            "names_match",
            label,
            WARN,
            _("Some server rows of the period use %(names)s: the purchase name changed.")
            % {"names": ", ".join(stale_server)},
        )
    if not facts.receipt_names & names:
        return CheckItem(
            "names_match", label, WARN, _("No purchase receipt from the browser to compare yet.")
        )
    return CheckItem(
        "names_match",
        label,
        PASS,
        _("Both lanes call the purchase %(name)s.") % {"name": facts.purchase_event},
    )


def _check_orders_reconcile(facts):
    label = _("Orders reconcile")
    if not facts.purchases_recorded:
        return CheckItem("orders_reconcile", label, WARN, _("No purchase recorded in the period."))
    failed = Ratio(facts.purchases_failed, facts.purchases_recorded)
    problems = []
    if facts.stale_in_flight:
        problems.append(
            ngettext(
                "%(n)d purchase has waited over an hour to be sent (is the worker running?)",
                "%(n)d purchases have waited over an hour to be sent (is the worker running?)",
                facts.stale_in_flight,
            )
            % {"n": facts.stale_in_flight}
        )
    if failed.percent > FAILED_PURCHASES_MAX:
        problems.append(
            _("%(n)d purchases failed (%(share)s, more than 1%%)")
            % {"n": facts.purchases_failed, "share": failed}
        )
    if problems:
        return CheckItem("orders_reconcile", label, FAIL, "; ".join(problems) + ".")
    return CheckItem(
        "orders_reconcile",
        label,
        PASS,
        _("Every purchase of the period was sent or settled; %(share)s failed.")
        % {"share": failed},
    )


def _check_dedup_visible(facts):
    label = _("Deduplication visible")
    if facts.merged:
        return CheckItem(
            "dedup_visible",
            label,
            PASS,
            ngettext(
                "%(n)d purchase reached TikTok from both lanes with the same id.",
                "%(n)d purchases reached TikTok from both lanes with the same id.",
                facts.merged,
            )
            % {"n": facts.merged},
        )
    if not facts.purchases_delivered:
        return CheckItem(
            "dedup_visible", label, WARN, _("No delivered purchase in the period yet.")
        )
    return CheckItem(
        "dedup_visible",
        label,
        FAIL,
        _("Purchases were delivered but the browser confirmed none of them: nothing will merge."),
    )


def _check_match_quality(facts):
    label = _("Match quality")
    ratio = Ratio(facts.with_email_or_phone, facts.purchases_delivered)
    if ratio.percent is None:
        return CheckItem(
            "match_quality", label, WARN, _("No delivered purchase in the period yet.")
        )
    detail = _("%(share)s of delivered purchases carry a hashed email or phone.") % {"share": ratio}
    # Without email or phone TikTok attributes mostly on click ids and cookies, which expire.
    status = PASS if ratio.percent >= MATCH_QUALITY_PASS else WARN
    return CheckItem("match_quality", label, status, detail)


def _check_consent_policy(facts):
    label = _("Consent policy set")
    if not facts.consent_policy_version:
        return CheckItem("consent_policy", label, WARN, _("CONSENT_POLICY_VERSION is not set."))
    if not facts.opt_in_countries:
        return CheckItem(
            "consent_policy",
            label,
            WARN,
            _("CONSENT_OPT_IN_COUNTRIES is empty: every country sends without asking."),
        )
    return CheckItem(
        "consent_policy",
        label,
        PASS,
        ngettext(
            "Policy version %(version)s; %(n)d opt-in country.",
            "Policy version %(version)s; %(n)d opt-in countries.",
            len(facts.opt_in_countries),
        )
        % {"version": facts.consent_policy_version, "n": len(facts.opt_in_countries)},
    )


def _check_config_recorded(facts):
    label = _("Configuration changes recorded")
    if not facts.config_changes or facts.config_latest is None:
        return CheckItem("config_recorded", label, WARN, _("No configuration recorded yet."))
    return CheckItem(
        "config_recorded",
        label,
        PASS,
        ngettext(
            "Last change on %(date)s; %(n)d change recorded.",
            "Last change on %(date)s; %(n)d changes recorded.",
            facts.config_changes,
        )
        % {
            "date": timezone.localtime(facts.config_latest).strftime("%Y-%m-%d %H:%M"),
            "n": facts.config_changes,
        },
    )


def evaluate_checklist(facts):
    """The pre-launch checklist judged on ``facts``: one CheckItem per item, in order (pure)."""
    return [
        check(facts)
        for check in (
            _check_pixel_fires,
            _check_server_delivers,
            _check_ids_match,
            _check_names_match,
            _check_orders_reconcile,
            _check_dedup_visible,
            _check_match_quality,
            _check_consent_policy,
            _check_config_recorded,
        )
    ]


# --- Queries: one each, however many rows, countries or days -------------------------------
#
# Closed days come from DailyRollup (summed over the period), today from TrackedEvent grouped
# the same way (rollups.grouped_events); the figures are then added up from both in Python.

IN_FLIGHT = (Status.PENDING, Status.SENDING)
DAILY_STATUSES = ("delivered", "failed", "suppressed")


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


def closed_day_groups(first_day, today):
    """The rollup groups of the period's closed days, summed over the days."""
    return list(
        DailyRollup.objects.filter(day__gte=first_day, day__lt=today, events__gt=0)
        .values(*GROUP_FIELDS)
        .annotate(
            **{name: Sum(name) for name in COUNT_FIELDS},
            example_message=Max("example_message"),
            example_error=Max("example_error"),
        )
        .order_by()
    )


def today_groups(today_start, live_start, stale_before):
    """Today's events grouped like the rollups, with the counts the stale figure needs.

    ``live_start`` is before today's start when the stale cut-off falls on yesterday: the
    in-flight rows between the two are in yesterday's rollup but are not stale yet.
    """
    in_flight = Q(status__in=IN_FLIGHT)
    today = Q(created_at__gte=today_start)
    groups = grouped_events(
        TrackedEvent.objects.filter(created_at__gte=live_start),
        only=today,
        extra={
            "stale": Count("pk", filter=in_flight & today & Q(created_at__lt=stale_before)),
            "recent_closed": Count("pk", filter=in_flight & Q(created_at__lt=today_start)),
        },
    )
    return groups


def group_counts(groups):
    """The status counts every purchase grouping shares, added up over rollup groups (pure)."""
    counts = dict.fromkeys(COUNT_NAMES, 0)
    for group in groups:
        events = group["events"]
        status = group["status"]
        counts["recorded"] += events
        if status == Status.DELIVERED:
            counts["delivered"] += events
        elif status == Status.FAILED:
            counts["failed"] += events
        elif status == Status.SUPPRESSED:
            counts["suppressed"] += events
        elif status in IN_FLIGHT:
            counts["in_flight"] += events
        if group["browser_seen"]:
            counts["browser_seen"] += events
            # The merged verdict: delivered and confirmed by the browser (dedup.verdict_filter).
            if status == Status.DELIVERED:
                counts["merged"] += events
    return counts


def counts_by(groups, field_name):
    """The counts of ``groups`` per value of one column, groups without events left out (pure)."""
    by_value = {}
    for group in groups:
        by_value.setdefault(group[field_name], []).append(group)
    rows = [{field_name: value, **group_counts(members)} for value, members in by_value.items()]
    return [row for row in rows if row["recorded"]]


def stale_in_flight(closed, live, purchase_event):
    """Purchases in flight since before the stale cut-off (pure).

    Every in-flight purchase of a closed day is stale, except those created after the cut-off
    (only possible in the first hour of the day), counted live.
    """
    closed_in_flight = sum(
        group["events"]
        for group in closed
        if group["event"] == purchase_event and group["status"] in IN_FLIGHT
    )
    purchases_live = [group for group in live if group["event"] == purchase_event]
    recent = sum(group["recent_closed"] for group in purchases_live)
    today = sum(group["stale"] for group in purchases_live)
    # The rollup may be older than the rows' current status: never below zero.
    return max(closed_in_flight - recent, 0) + today


def key_counts(purchase_groups):
    """Delivered purchases and, per match key bit, how many carried it (pure)."""
    delivered = [group for group in purchase_groups if group["status"] == Status.DELIVERED]
    counts = {
        "delivered": sum(group["events"] for group in delivered),
        "email_or_phone": sum(group["with_email_or_phone"] for group in delivered),
    }
    for bit, key in enumerate(MATCH_KEYS):
        counts[f"key_{bit}"] = sum(group[f"with_{key}"] for group in delivered)
    return counts


def failure_counts(groups):
    """Failed events (every event name) by TikTok code, with an example message (pure)."""
    by_code = {}
    for group in groups:
        if group["status"] != Status.FAILED or not group["events"]:
            continue
        code = None if group["last_code"] == DailyRollup.NO_CODE else group["last_code"]
        row = by_code.setdefault(
            code, {"last_code": code, "count": 0, "example": "", "example_error": ""}
        )
        row["count"] += group["events"]
        row["example"] = max(row["example"], group["example_message"] or "")
        row["example_error"] = max(row["example_error"], group["example_error"] or "")
    return sorted(
        by_code.values(),
        key=lambda row: (-row["count"], row["last_code"] is None, row["last_code"] or 0),
    )


def today_counts(live, today):
    """Today's server events (every event name) by status, as a row of the daily series."""
    counts = group_counts(live)
    return {"day": today, **{name: counts[name] for name in ("recorded", *DAILY_STATUSES)}}


def server_purchase_names(groups):
    """The purchase names server rows of the period were recorded under (pure)."""
    names = purchase_names(conf.get("PURCHASE_EVENT"))
    return frozenset(
        group["event"] for group in groups if group["events"] and group["event"] in names
    )


def receipt_totals(start, purchase_rows_seen):
    """Purchase receipts of the period: how many, how many a server row matches, browser only.

    A receipt and its server row mark each other as they arrive (``browser_seen_at``), so the
    rows seen by the browser are the matched receipts: no per-receipt lookup, which at a
    million rows cost a second.
    """
    names = purchase_names(conf.get("PURCHASE_EVENT"))
    total = BrowserReceipt.objects.filter(received_at__gte=start, event__in=names).count()
    matched = min(purchase_rows_seen, total)
    return {"purchase_receipts": total, "matched": matched, "browser_only": total - matched}


def receipt_event_counts(start):
    """{event name: receipts} of the period, whatever the event."""
    rows = (
        BrowserReceipt.objects.filter(received_at__gte=start)
        .values("event")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {row["event"]: row["count"] for row in rows}


def config_history():
    """Record the configuration if it changed; then how many changes and the latest one's time."""
    record_config_if_changed()
    return ConfigChange.objects.aggregate(count=Count("pk"), latest=Max("recorded_at"))


# --- The page ---------------------------------------------------------------------------------


def dashboard_context(days, now=None):
    """Everything the dashboard shows for a period of ``days`` calendar days ending today."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    first_day = period_first_day(days, today)
    start = timezone.make_aware(datetime.combine(first_day, time.min))
    today_start = timezone.make_aware(datetime.combine(today, time.min))
    stale_before = now - STALE_AFTER
    purchase_event = conf.get("PURCHASE_EVENT")

    closed_days = closed_day_counts(first_day, today)
    missing = sorted(
        {first_day + timedelta(days=n) for n in range(days - 1)}
        - {row["day"] for row in closed_days}
    )
    if missing:
        # Just installed, or the periodic refresh has not run yet: roll the days up now, once.
        rebuild_days(missing)
        closed_days = closed_day_counts(first_day, today)
    closed = closed_day_groups(first_day, today)
    live = today_groups(today_start, max(start, min(today_start, stale_before)), stale_before)
    groups = [*closed, *live]
    purchase_groups = [group for group in groups if group["event"] == purchase_event]

    totals = {
        **group_counts(purchase_groups),
        "stale_in_flight": stale_in_flight(closed, live, purchase_event),
    }
    receipts = receipt_totals(start, totals["browser_seen"])
    summary = purchase_summary(totals, receipts["browser_only"])
    receipt_events = receipt_event_counts(start)
    keys = key_counts(purchase_groups)
    daily = daily_series([*closed_days, today_counts(live, today)], first_day, days)
    config = config_history()
    secrets = configured_tokens()

    facts = HealthFacts(
        purchase_event=purchase_event,
        receipts=sum(receipt_events.values()),
        receipt_names=frozenset(receipt_events),
        server_recorded=sum(day["recorded"] for day in daily),
        server_delivered=sum(day["delivered"] for day in daily),
        server_purchase_names=server_purchase_names(groups),
        purchase_receipts=receipts["purchase_receipts"],
        purchase_receipts_matched=receipts["matched"],
        purchases_recorded=summary["recorded"],
        purchases_failed=summary["failed"],
        purchases_delivered=keys["delivered"],
        stale_in_flight=summary["stale_in_flight"],
        merged=summary["merged"],
        with_email_or_phone=keys["email_or_phone"],
        consent_policy_version=str(conf.get("CONSENT_POLICY_VERSION") or ""),
        opt_in_countries=tuple(conf.get("CONSENT_OPT_IN_COUNTRIES") or ()),
        config_changes=config["count"],
        config_latest=config["latest"],
    )
    countries = top_groups(counts_by(purchase_groups, "country"), "country", country_label)
    consents = top_groups(
        counts_by(purchase_groups, "consent_status"), "consent_status", consent_label
    )
    return {
        "days": days,
        "periods": PERIODS,
        "first_day": first_day,
        "last_day": timezone.localdate(now),
        "purchase_event": purchase_event,
        "summary": summary,
        "countries": countries,
        "consents": consents,
        "splits": [
            {
                "id": "by-country",
                "caption": _("Purchases by country"),
                "header": _("Country"),
                "groups": countries,
            },
            {
                "id": "by-consent",
                "caption": _("Purchases by consent at checkout"),
                "header": _("Consent"),
                "groups": consents,
            },
        ],
        "match_keys": match_key_coverage(keys),
        "match_delivered": keys["delivered"],
        "failures": failure_rows(failure_counts(groups), secrets),
        "daily": daily,
        "chart": daily_chart_svg(daily),
        "receipts": receipts,
        "receipt_events": receipt_events,
        "facts": facts,
        "checklist": evaluate_checklist(facts),
        "config": config,
    }


def dashboard_view(request, model_admin):
    """The admin page: purchases, splits, match keys, failures, a daily chart and the checklist."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    days = period_days(request.GET.get("days"))
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("TikTok tracking health"),
        "opts": opts,
        "app_label": opts.app_label,
        **dashboard_context(days),
    }
    return TemplateResponse(request, "admin/tiktok_tracking/dashboard.html", context)
