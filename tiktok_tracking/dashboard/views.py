"""The dashboard page: reads the period's figures (never writes) and renders them."""

from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from tiktok_tracking import conf
from tiktok_tracking.config_log import current_fingerprint
from tiktok_tracking.dashboard import queries
from tiktok_tracking.dashboard.chart import daily_chart
from tiktok_tracking.dashboard.checklist import HealthFacts, evaluate_checklist
from tiktok_tracking.dashboard.figures import (
    PERIODS,
    STALE_AFTER,
    consent_label,
    country_label,
    counts_by,
    daily_series,
    failure_counts,
    failure_rows,
    group_counts,
    key_counts,
    live_day_counts,
    match_key_coverage,
    period_days,
    period_first_day,
    purchase_names,
    purchase_summary,
    server_purchase_names,
    stale_in_flight,
    top_groups,
    unrolled_days,
)
from tiktok_tracking.pixels import configured_tokens
from tiktok_tracking.readiness.markets import market_index
from tiktok_tracking.readiness.panel import coverage_by_day, market_rows, pooled_not_ready
from tiktok_tracking.replica import reports_read
from tiktok_tracking.rollups import day_bounds

TEMPLATE = "admin/tiktok_tracking/dashboard.html"


def dashboard_context(days, now=None):
    """Everything the dashboard shows for a period of ``days`` calendar days ending today.

    Closed days come from their rollups; a closed day the periodic task has not rolled up
    yet is counted from the event rows for this request, and ``live_days`` says how many.
    """
    now = now or timezone.now()
    today = timezone.localdate(now)
    first_day = period_first_day(days, today)
    start = day_bounds(first_day)[0]
    today_start = day_bounds(today)[0]
    stale_before = now - STALE_AFTER
    purchase_event = conf.get("PURCHASE_EVENT")

    closed_days = queries.closed_day_counts(first_day, today)
    unrolled = unrolled_days(first_day, today, closed_days)
    closed = queries.closed_day_groups(first_day, today, read_live=unrolled)
    live_days = [*unrolled, today]
    live = queries.live_groups(
        live_days, today, max(start, min(today_start, stale_before)), stale_before
    )
    groups = [*closed, *live]
    purchase_groups = [group for group in groups if group["event"] == purchase_event]

    totals = {
        **group_counts(purchase_groups),
        "stale_in_flight": stale_in_flight(closed, live, purchase_event),
    }
    receipts = queries.receipt_totals(start, totals["browser_seen"], purchase_names(purchase_event))
    summary = purchase_summary(totals, receipts["browser_only"])
    receipt_events = queries.receipt_event_counts(start, first_day)
    keys = key_counts(purchase_groups)
    daily = daily_series([*closed_days, *live_day_counts(live, live_days)], first_day, days)
    config = queries.stored_config()
    report = queries.latest_readiness()
    readiness = readiness_table(report, first_day, today, days, live, unrolled)

    facts = HealthFacts(
        purchase_event=purchase_event,
        receipts=sum(receipt_events.values()),
        receipt_names=frozenset(receipt_events),
        server_recorded=sum(day["recorded"] for day in daily),
        server_delivered=sum(day["delivered"] for day in daily),
        server_purchase_names=server_purchase_names(groups, purchase_event),
        server_event_names=frozenset(group["event"] for group in groups if group["events"]),
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
        config_outdated=bool(config["count"]) and config["fingerprint"] != current_fingerprint(),
        readiness_judged=report is not None,
        pooled_not_ready=tuple(pooled_not_ready(report.document)) if report else (),
    )
    countries = top_groups(counts_by(purchase_groups, "country"), "country", country_label)
    consents = top_groups(
        counts_by(purchase_groups, "consent_status"), "consent_status", consent_label
    )
    return {
        "days": days,
        "periods": PERIODS,
        "first_day": first_day,
        "last_day": today,
        "live_days": len(unrolled),
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
        "failures": failure_rows(failure_counts(groups), configured_tokens()),
        "daily": daily,
        "chart": daily_chart(daily),
        "receipts": receipts,
        "receipt_events": receipt_events,
        "facts": facts,
        "checklist": evaluate_checklist(facts),
        "config": config,
        "readiness": readiness,
    }


def readiness_table(report, first_day, today, days, live, unrolled):
    """The market table: the latest stored ``report``, with each market's coverage per day of
    the period (rolled-up days from the rollups, the rest from the live groups already read)."""
    if report is None:
        return None
    names = purchase_names(conf.get("PURCHASE_EVENT"))
    rolled = [
        group
        for group in queries.purchase_day_groups(first_day, today, names)
        if group["day"] not in unrolled
    ]
    read_live = [group for group in live if group["event"] in names]
    period = [first_day + timedelta(days=offset) for offset in range(days)]
    index = market_index(conf.readiness_settings()["MARKETS"])
    series = coverage_by_day([*rolled, *read_live], index, period)
    return {
        "computed_at": report.computed_at,
        "window_days": report.document["window_days"],
        "rows": market_rows(report.document, series),
    }


def dashboard_view(request, model_admin):
    """The admin page: purchases, splits, match keys, failures, a daily chart and the checklist."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    days = period_days(request.GET.get("days"))
    opts = model_admin.model._meta
    # The figures come from the replica where one is configured; the page says how fresh.
    with reports_read() as read_from:
        context = {
            **model_admin.admin_site.each_context(request),
            "title": _("TikTok tracking health"),
            "opts": opts,
            "app_label": opts.app_label,
            "read_from": read_from,
            **dashboard_context(days),
        }
        # Rendered here: a lazy query in the template must read where the figures were read.
        return TemplateResponse(request, TEMPLATE, context).render()
