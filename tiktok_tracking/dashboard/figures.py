"""The dashboard's figures: periods, ratios, group counts, match keys, failures, daily series."""

import re
from dataclasses import dataclass
from datetime import timedelta

from django.utils.translation import gettext_lazy as _

from tiktok_tracking import redaction
from tiktok_tracking.dedup import MERGED, verdict_counts
from tiktok_tracking.events import MATCH_KEYS
from tiktok_tracking.models import DailyRollup, TrackedEvent
from tiktok_tracking.standards import PURCHASE_EVENT_NAMES

Status = TrackedEvent.Status

PERIODS = (1, 7, 30)
DEFAULT_PERIOD = 7
TOP_COUNTRIES = 20
# A purchase still queued after this long means the worker or the broker is not running.
STALE_AFTER = timedelta(hours=1)
EXAMPLE_MESSAGE_LENGTH = 160
IN_FLIGHT = (Status.PENDING, Status.SENDING)
# The statuses the daily series counts (and the chart stacks), every event name.
DAILY_STATUSES = ("delivered", "failed", "suppressed")
COUNT_NAMES = (
    "recorded",
    "delivered",
    "failed",
    "suppressed",
    "in_flight",
    "browser_seen",
    "merged",
)

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
# TikTok's messages name the bad field and an exception text may quote the bad value: an
# example message loses anything that looks like personal data before the page shows it.
PERSONAL_DATA = (
    (re.compile(r"[^\s@'\"<>,;:()\[\]]+@[^\s@'\"<>,;:()\[\]]+\.[A-Za-z]{2,}"), "(email)"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "(ip)"),
    (re.compile(r"(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|[0-9a-fA-F:]*::[0-9a-fA-F:]+"), "(ip)"),
    (re.compile(r"\+\d[\d ().-]{5,}\d|\b\d{9,}\b"), "(phone)"),
    (re.compile(r"Mozilla/[^\"'\n]*"), "(user agent)"),
)


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


# --- Periods ----------------------------------------------------------------------------------


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


def unrolled_days(first_day, today, closed_day_rows):
    """The closed days of the period without rollup rows, oldest first (pure)."""
    rolled_up = {row["day"] for row in closed_day_rows}
    closed = (first_day + timedelta(days=n) for n in range((today - first_day).days))
    return [day for day in closed if day not in rolled_up]


def day_runs(days):
    """``days`` as runs of consecutive days: [(first, last), ...], oldest first (pure)."""
    runs = []
    for day in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def purchase_names(purchase_event):
    """Every name a purchase may go by: the configured one and TikTok's current and old names."""
    return frozenset(PURCHASE_EVENT_NAMES | {purchase_event})


# --- Groups of rows: rollup groups and live groups share one shape ---------------------------


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
    # The merged verdict as the admin gives it, from the one truth table.
    counts["merged"] = verdict_counts(groups)[MERGED]
    return counts


def counts_by(groups, field_name):
    """The counts of ``groups`` per value of one column, groups without events left out (pure)."""
    by_value = {}
    for group in groups:
        by_value.setdefault(group[field_name], []).append(group)
    rows = [{field_name: value, **group_counts(members)} for value, members in by_value.items()]
    return [row for row in rows if row["recorded"]]


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


def stale_in_flight(closed, live, purchase_event):
    """Purchases in flight since before the stale cut-off (pure).

    Every in-flight purchase of a rolled-up day is stale, except those created after the
    cut-off (only possible in the first hour of the day), counted live as ``recent_closed``;
    the live groups count their own stale rows.
    """
    closed_in_flight = sum(
        group["events"]
        for group in closed
        if group["event"] == purchase_event and group["status"] in IN_FLIGHT
    )
    purchases_live = [group for group in live if group["event"] == purchase_event]
    recent = sum(group["recent_closed"] for group in purchases_live)
    live_stale = sum(group["stale"] for group in purchases_live)
    # The rollup may be older than the rows' current status: never below zero.
    return max(closed_in_flight - recent, 0) + live_stale


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


def server_purchase_names(groups, purchase_event):
    """The purchase names server rows of the period were recorded under (pure)."""
    names = purchase_names(purchase_event)
    return frozenset(
        group["event"] for group in groups if group["events"] and group["event"] in names
    )


# --- Splits, failures, days -------------------------------------------------------------------


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


def failure_rows(rows, secrets=()):
    """Failed rows grouped by TikTok code, labelled, with a cleaned example message (pure)."""
    shown = []
    for row in sorted(rows, key=lambda row: (-row["count"], row["last_code"] is None)):
        code = row["last_code"]
        example = row.get("example") or row.get("example_error")
        shown.append(
            {
                "code": code,
                "label": NO_CODE_LABEL if code is None else str(code),
                "count": row["count"],
                "example": redaction.redact(
                    example, secrets, limit=EXAMPLE_MESSAGE_LENGTH, patterns=PERSONAL_DATA
                ),
            }
        )
    return shown


def live_day_counts(live, days):
    """The live groups' server events (every event name) on each of ``days``, by status (pure).

    Groups of other days (the stale window's rows of a rolled-up day) are left out.
    """
    by_day = {}
    for group in live:
        by_day.setdefault(group["day"], []).append(group)
    rows = []
    for day in days:
        counts = group_counts(by_day.get(day, ()))
        rows.append({"day": day, **{name: counts[name] for name in ("recorded", *DAILY_STATUSES)}})
    return rows


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
                **{name: row.get(name, 0) for name in DAILY_STATUSES},
            }
        )
    return series
