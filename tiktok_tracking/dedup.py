"""The dedup verdict of an event: will TikTok see both lanes and merge them, or only one?"""

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


def dedup_verdict(status, browser_seen):
    """The verdict for a server row's ``status`` and whether the browser reported the event."""
    if status == "delivered":
        return MERGED if browser_seen else SERVER_ONLY
    if status in ("pending", "sending"):
        return PENDING
    if browser_seen:
        # The pixel fired but the server lane did not deliver: TikTok has one lane only.
        return BROWSER_ONLY
    return SUPPRESSED if status == "suppressed" else FAILED


def verdict_filter(verdict):
    """The Q object selecting rows with ``verdict`` (indexed columns only)."""
    seen = Q(browser_seen_at__isnull=False)
    unseen = Q(browser_seen_at__isnull=True)
    return {
        MERGED: Q(status="delivered") & seen,
        SERVER_ONLY: Q(status="delivered") & unseen,
        PENDING: Q(status__in=("pending", "sending")),
        BROWSER_ONLY: Q(status__in=("failed", "suppressed")) & seen,
        SUPPRESSED: Q(status="suppressed") & unseen,
        FAILED: Q(status="failed") & unseen,
    }[verdict]
