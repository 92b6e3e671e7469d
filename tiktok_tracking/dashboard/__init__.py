"""The tracking health dashboard: can the numbers behind the shop's TikTok ad rules be trusted?

``figures`` and ``chart`` compute (pure), ``checklist`` judges (a table of rules), ``queries``
reads (never writes) and ``views`` serves the admin page.
"""

from tiktok_tracking.dashboard.chart import daily_chart
from tiktok_tracking.dashboard.checklist import (
    FAIL,
    PASS,
    RULES,
    WARN,
    CheckItem,
    CheckStatus,
    HealthFacts,
    evaluate_checklist,
)
from tiktok_tracking.dashboard.figures import (
    Ratio,
    daily_series,
    failure_rows,
    period_days,
    top_groups,
)
from tiktok_tracking.dashboard.views import dashboard_context, dashboard_view

__all__ = [
    "FAIL",
    "PASS",
    "RULES",
    "WARN",
    "CheckItem",
    "CheckStatus",
    "HealthFacts",
    "Ratio",
    "daily_chart",
    "daily_series",
    "dashboard_context",
    "dashboard_view",
    "evaluate_checklist",
    "failure_rows",
    "period_days",
    "top_groups",
]
