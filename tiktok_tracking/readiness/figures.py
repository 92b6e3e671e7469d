"""The readiness figures of every market and window, counted from the app's tables (the I/O).

Purchases come from the daily rollups for closed days and from the outbox and the archive for
today (and any day the rollup task has not reached): a fixed number of queries, however many
rows. What the rollups do not hold is read from the outbox alone, which the archive keeps to
the in-flight and recent rows: the oldest undelivered purchase, the delivery latency (the
most recent delivered purchases, at most ``LATENCY_SAMPLE``), the last pixel receipt, TikTok's
latest answers. Purchases the two lanes sent under different names come from the receipts. The
shop's paid orders, when it names them (``PAID_ORDERS``), are read through the order adapter,
one pass per window.

Windows are calendar days in the site's time zone ending now: 1 is today, 7 is today and the
six days before.
"""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import Count, Exists, F, FloatField, Max, Min, OuterRef, Q, Sum
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.client import DELIVERED_CODES
from tiktok_tracking.dashboard.figures import IN_FLIGHT, purchase_names
from tiktok_tracking.dashboard.queries import created_on
from tiktok_tracking.dedup import BROWSER_ONLY, MERGED, SERVER_ONLY, SUPPRESSED, dedup_verdict
from tiktok_tracking.events import MATCH_KEYS
from tiktok_tracking.models import EVENT_TABLES, DailyRollup, Refund, TrackedEvent
from tiktok_tracking.readiness import quality
from tiktok_tracking.readiness.markets import market_index, market_of
from tiktok_tracking.readiness.verdict import WINDOWS, MarketFigures
from tiktok_tracking.reconcile import paid_orders_source, scan_paid_orders
from tiktok_tracking.refunds import counted_refunds
from tiktok_tracking.rollups import KEY_FIELDS, day_bounds, grouped_everywhere
from tiktok_tracking.standards import DEDUP_WINDOW_HOURS

# Delivered purchases the latency percentiles are read from, newest first.
LATENCY_SAMPLE = 5000
Status = TrackedEvent.Status


class Tally:
    """What one market's purchase groups of one window add up to."""

    def __init__(self):
        self.counts = Counter()
        self.with_key = Counter()
        self.withheld_by_reason = Counter()

    def add(self, group):
        events = group["events"]
        verdict = dedup_verdict(group["status"], group["browser_seen"])
        self.counts["recorded"] += events
        self.counts[verdict] += events
        for key, field_name in zip(MATCH_KEYS, KEY_FIELDS, strict=True):
            self.with_key[key] += group[field_name]
        if verdict == SUPPRESSED:
            reason = group["consent_status"] or "not asked"
            self.withheld_by_reason[reason] += events


def window_days(today, days):
    return [today - timedelta(days=offset) for offset in range(days)]


def purchase_groups(today, names):
    """``[(day, group)]`` of the purchases of the longest window: rollups, then live rows."""
    first_day = today - timedelta(days=max(WINDOWS) - 1)
    rolled = set(
        DailyRollup.objects.filter(day__gte=first_day, day__lt=today)
        .values_list("day", flat=True)
        .distinct()
    )
    rollups = (
        DailyRollup.objects.filter(day__gte=first_day, day__lt=today, event__in=names, events__gt=0)
        .values("day", "status", "country", "consent_status", "browser_seen")
        .annotate(events=Sum("events"), **{name: Sum(name) for name in KEY_FIELDS})
        .order_by()
    )
    groups = [(group.pop("day"), group) for group in rollups]
    live_days = [day for day in window_days(today, max(WINDOWS)) if day not in rolled]
    live = grouped_everywhere(
        created_on(live_days, today) & Q(event__in=names), by={"day": TruncDate("created_at")}
    )
    groups += [(group.pop("day"), group) for group in live]
    return groups


def country_of(value):
    """A row's country as the figures are keyed by it: its code, or "unknown"."""
    return market_of(value, {})


def per_country(groups, pick):
    """``{country: pick of the groups' times}`` from groups of ``country`` and ``at`` (a blank
    and a NULL country are both unknown)."""
    times = {}
    for value, at in groups.values_list("country", "at").order_by():
        country = country_of(value)
        times[country] = pick(at, times.get(country, at))
    return times


def outbox_facts(names, now):
    """Per country, from the outbox: the oldest undelivered purchase, the latency sample, the
    last pixel receipt, and ``(country, created_at)`` of the purchases the pixel did not report."""
    purchases = TrackedEvent.objects.filter(event__in=names)
    oldest = per_country(
        purchases.filter(status__in=IN_FLIGHT).values("country").annotate(at=Min("created_at")),
        min,
    )

    latencies = defaultdict(list)
    delivered = (
        purchases.filter(status=Status.DELIVERED, delivered_at__gte=now - timedelta(days=1))
        .order_by("-delivered_at")
        .values_list("country", "created_at", "delivered_at")[:LATENCY_SAMPLE]
    )
    for country, created_at, delivered_at in delivered:
        latencies[country_of(country)].append((delivered_at - created_at).total_seconds())

    last_receipt = per_country(
        purchases.filter(browser_seen_at__isnull=False)
        .values("country")
        .annotate(at=Max("browser_seen_at")),
        max,
    )
    unseen = [
        (country_of(country), created_at)
        for country, created_at in purchases.filter(browser_seen_at__isnull=True).values_list(
            "country", "created_at"
        )
    ]
    return oldest, latencies, last_receipt, unseen


def count_by_country_and_day(rows, counts):
    """Add the event ``rows`` to ``counts`` by ``(country, day created)``, in one query."""
    grouped = (
        rows.annotate(day=TruncDate("created_at"))
        .values("country", "day")
        .annotate(count=Count("pk"))
        .values_list("country", "day", "count")
        .order_by()
    )
    for country, day, count in grouped:
        counts[(country_of(country), day)] += count
    return counts


def late_resends(first_day, names):
    """``{(country, day): purchases}`` the server lane delivered after TikTok's dedup window
    while the pixel had reported them: TikTok counts each twice. One query per table."""
    late = Counter()
    for model in EVENT_TABLES:
        rows = model.objects.filter(
            event__in=names,
            created_at__gte=day_bounds(first_day)[0],
            status=Status.DELIVERED,
            browser_seen_at__isnull=False,
            delivered_at__gt=F("event_time") + timedelta(hours=DEDUP_WINDOW_HOURS),
        )
        count_by_country_and_day(rows, late)
    return late


def unmergeable(first_day, names):
    """``{(country, day): purchases}`` since ``first_day`` the pixel reported under the server
    event's id but another purchase name (``CompletePayment`` beside ``Purchase``): TikTok
    merges only the same pixel, name and id, so it counts each twice. One query per name and
    table, each probe on the receipts' unique index."""
    from tiktok_tracking.models import BrowserReceipt

    counts = Counter()
    for model in EVENT_TABLES:
        for name in sorted(names):
            reported_otherwise = BrowserReceipt.objects.filter(
                pixel_id=OuterRef("pixel_id"),
                event__in=sorted(names - {name}),
                event_id=OuterRef("event_id"),
            )
            rows = model.objects.filter(
                event=name,
                created_at__gte=day_bounds(first_day)[0],
                browser_seen_at__isnull=True,
            ).filter(Exists(reported_otherwise))
            count_by_country_and_day(rows, counts)
    return counts


def recent_answers(names, now, minutes):
    """``{country: Counter(code: purchases)}`` of the purchases TikTok answered in the last
    ``minutes`` (0 and 20001 accepted, anything else refused), from their latest answer. One
    query: the outbox keeps every row that changed this recently."""
    answers = defaultdict(Counter)
    rows = (
        TrackedEvent.objects.filter(
            event__in=names,
            last_code__isnull=False,
            updated_at__gte=now - timedelta(minutes=minutes),
        )
        .values("country", "last_code")
        .annotate(count=Count("pk"))
        .values_list("country", "last_code", "count")
        .order_by()
    )
    for country, code, count in rows:
        answers[country_of(country)][code] += count
    return answers


def in_window(counts, market, days, today):
    """The sum of ``{(market, day): n}`` over ``market``'s days of the ``days`` window."""
    return sum(
        value
        for (counted_market, day), value in counts.items()
        if counted_market == market and (today - day).days < days
    )


def refunded_orders(first_day):
    """``{(country, day): refunds as orders}`` since ``first_day``: each refund's share of its
    order's value, of the orders known as paid only. An order's refunds take back its value at
    most (refunds.refund_facts), so one order counts as one refunded order at most."""
    # As floats: SQLite divides two whole amounts as integers (25 / 50 = 0).
    share = Cast("amount", FloatField()) / Cast("order_value", FloatField())
    in_window = Refund.objects.filter(refunded_at__gte=day_bounds(first_day)[0], order_value__gt=0)
    rows = (
        counted_refunds(in_window)
        .annotate(day=TruncDate("refunded_at"))
        .values("country", "day")
        .annotate(orders=Sum(share))
        .values_list("country", "day", "orders")
        .order_by()
    )
    refunds = Counter()
    for country, day, orders in rows:
        refunds[(country_of(country), day)] += float(orders)
    return refunds


def paid_orders_by_country(today):
    """``{days: Counter(country: paid orders)}`` per window, or None without PAID_ORDERS."""
    source = paid_orders_source()
    if source is None:
        return None
    end = day_bounds(today)[1]
    paid = {}
    for days in WINDOWS:
        start = day_bounds(today - timedelta(days=days - 1))[0]
        scanned = scan_paid_orders(source(start, end))
        counts = Counter()
        for country, count in scanned.by_country.items():
            counts[country_of(country)] += count
        paid[days] = counts
    return paid


def percentile(values, share):
    """The ``share`` percentile of ``values`` (nearest rank), None for none (pure)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(max(math.ceil(share * len(ordered)) - 1, 0), len(ordered) - 1)]


@dataclass
class Gathered:
    """What the tables hold for the readiness figures, per country: read once, then summed
    into markets however the countries are grouped (``assemble``)."""

    now: datetime
    today: date
    groups: list
    refunds: Counter
    late: Counter
    oldest: dict
    latencies: dict
    last_receipt: dict
    unseen: list
    paid: dict | None
    unmergeable: Counter
    answers: dict

    def countries(self):
        seen = {country_of(group["country"]) for _day, group in self.groups}
        seen |= set(self.oldest)
        if self.paid:
            seen |= {country for counts in self.paid.values() for country in counts}
        return seen


def gather(now=None, *, paid=True, thresholds=None):
    """Read everything the figures need, per country (a fixed number of queries, and one pass
    over the shop's paid orders per window unless ``paid=False``); ``thresholds`` are the
    verdict's, READINESS's unless given, for the error-spike window."""
    now = now or timezone.now()
    thresholds = thresholds or conf.readiness_thresholds()
    today = timezone.localdate(now)
    names = purchase_names(conf.get("PURCHASE_EVENT"))
    first_day = today - timedelta(days=max(WINDOWS) - 1)
    oldest, latencies, last_receipt, unseen = outbox_facts(names, now)
    return Gathered(
        now=now,
        today=today,
        groups=purchase_groups(today, names),
        refunds=refunded_orders(first_day),
        late=late_resends(first_day, names),
        oldest=oldest,
        latencies=latencies,
        last_receipt=last_receipt,
        unseen=unseen,
        paid=paid_orders_by_country(today) if paid else None,
        unmergeable=unmergeable(first_day, names),
        answers=recent_answers(names, now, thresholds.error_spike_minutes),
    )


def regroup(counts, index):
    """``{(country, day): n}`` as ``{(market, day): n}``."""
    grouped = Counter()
    for (country, day), value in counts.items():
        grouped[(market_of(country, index), day)] += value
    return grouped


def by_market(counts, index):
    """``{country: n}`` as ``Counter(market: n)``."""
    grouped = Counter()
    for country, value in counts.items():
        grouped[market_of(country, index)] += value
    return grouped


def assemble(gathered, index, only=None):
    """``[MarketFigures]`` of every market ``index`` groups the countries into (or of the
    markets in ``only``), for every window (pure)."""
    now, today = gathered.now, gathered.today
    tallies = defaultdict(Tally)  # (market, days) -> Tally
    windows_of_day = {
        day: [days for days in WINDOWS if (today - day).days < days]
        for day in window_days(today, max(WINDOWS))
    }
    for day, group in gathered.groups:
        market = market_of(group["country"], index)
        for days in windows_of_day.get(day, ()):
            tallies[(market, days)].add(group)

    refunds, late = regroup(gathered.refunds, index), regroup(gathered.late, index)
    renamed = regroup(gathered.unmergeable, index)
    answers = defaultdict(Counter)
    for country, codes in gathered.answers.items():
        answers[market_of(country, index)].update(codes)
    oldest, latencies, last_receipt = {}, defaultdict(list), {}
    for country, at in gathered.oldest.items():
        market = market_of(country, index)
        oldest[market] = min(at, oldest.get(market, at))
    for country, values in gathered.latencies.items():
        latencies[market_of(country, index)] += values
    for country, at in gathered.last_receipt.items():
        market = market_of(country, index)
        last_receipt[market] = max(at, last_receipt.get(market, at))
    since_receipt = Counter()
    for country, created_at in gathered.unseen:
        market = market_of(country, index)
        if market in last_receipt and created_at > last_receipt[market]:
            since_receipt[market] += 1
    paid = None
    if gathered.paid is not None:
        paid = {days: by_market(counts, index) for days, counts in gathered.paid.items()}

    markets = {market_of(country, index) for country in gathered.countries()}
    if only is not None:
        markets &= set(only)
    figures = []
    for market in sorted(markets):
        for days in WINDOWS:
            tally = tallies.get((market, days)) or Tally()
            counts = tally.counts
            figures.append(
                MarketFigures(
                    market=market,
                    window_days=days,
                    now=now,
                    paid_orders=None if paid is None else paid[days][market],
                    recorded_orders=counts["recorded"],
                    tracked_orders=counts[MERGED] + counts[SERVER_ONLY] + counts[BROWSER_ONLY],
                    withheld_orders=counts[SUPPRESSED],
                    withheld_by_reason=dict(tally.withheld_by_reason),
                    merged=counts[MERGED],
                    server_only=counts[SERVER_ONLY],
                    browser_only=counts[BROWSER_ONLY],
                    oldest_undelivered_at=oldest.get(market),
                    latency_p50_seconds=percentile(latencies.get(market), 0.5),
                    latency_p95_seconds=percentile(latencies.get(market), 0.95),
                    match_quality=quality.market_score(counts["recorded"], tally.with_key),
                    last_receipt_at=last_receipt.get(market),
                    server_orders_since_last_receipt=since_receipt[market],
                    unmergeable=in_window(renamed, market, days, today),
                    late_resends=in_window(late, market, days, today),
                    recent_answers=sum(answers[market].values()),
                    recent_refusals={
                        str(code): count
                        for code, count in answers[market].items()
                        if code not in DELIVERED_CODES
                    },
                    refunded_orders=in_window(refunds, market, days, today),
                )
            )
    return figures


def collect(now=None, *, paid=True):
    """``[MarketFigures]`` for every market seen in the last 30 days and every window, the
    markets as READINESS["MARKETS"] groups the countries.

    ``paid=False`` skips the shop's paid orders (the recorded purchases stand in for them).
    """
    index = market_index(conf.readiness_settings()["MARKETS"])
    return assemble(gather(now, paid=paid), index)
