"""The dedup verdict of an event: will TikTok see both lanes and merge them, or only one?

One truth table, read three ways: the verdict of a row (the admin), the rows of a verdict (the
admin's filter) and the verdicts of counted groups (the dashboard, the reconcile command).
"""

from collections import Counter
from functools import reduce
from operator import or_

from django.db.models import Q
from django.utils.translation import gettext_lazy as _

MERGED = "merged"
SERVER_ONLY = "server_only"
BROWSER_ONLY = "browser_only"
SUPPRESSED = "suppressed"
PENDING = "pending"
FAILED = "failed"

VERDICTS = {
    MERGED: _("Both lanes, same id: will merge"),
    SERVER_ONLY: _("Server only"),
    BROWSER_ONLY: _("Browser only"),
    SUPPRESSED: _("Suppressed by consent"),
    PENDING: _("Pending"),
    FAILED: _("Failed"),
}

# Where a server row stands: the row statuses by what they mean for TikTok.
SERVER_LANE = {
    "delivered": ("delivered",),
    "in_flight": ("pending", "sending"),
    "failed": ("failed",),
    "suppressed": ("suppressed",),
}
LANE_OF_STATUS = {status: lane for lane, statuses in SERVER_LANE.items() for status in statuses}

# (server lane, browser receipt seen) -> verdict. The pixel firing without the server lane
# delivering leaves TikTok one lane only: browser only, whatever kept the server row back.
TRUTH_TABLE = {
    ("delivered", True): MERGED,
    ("delivered", False): SERVER_ONLY,
    ("in_flight", True): PENDING,
    ("in_flight", False): PENDING,
    ("failed", True): BROWSER_ONLY,
    ("failed", False): FAILED,
    ("suppressed", True): BROWSER_ONLY,
    ("suppressed", False): SUPPRESSED,
}


def dedup_verdict(status, browser_seen):
    """The verdict for a server row's ``status`` and whether the browser reported the event."""
    return TRUTH_TABLE[(LANE_OF_STATUS[status], bool(browser_seen))]


def verdict_counts(groups):
    """``Counter({verdict: events})`` of groups with ``status``, ``browser_seen``, ``events``."""
    counts = Counter()
    for group in groups:
        counts[dedup_verdict(group["status"], group["browser_seen"])] += group["events"]
    return counts


def verdict_filter(verdict):
    """The Q object selecting rows with ``verdict`` (status and receipt columns only)."""
    terms = []
    for (lane, seen), answer in TRUTH_TABLE.items():
        if answer != verdict:
            continue
        statuses = Q(status__in=SERVER_LANE[lane])
        # Both receipt states give this verdict: the receipt does not matter.
        if TRUTH_TABLE[(lane, not seen)] == verdict:
            if not seen:
                terms.append(statuses)
            continue
        terms.append(statuses & Q(browser_seen_at__isnull=not seen))
    return reduce(or_, terms)
