"""Reconciling the shop's paid orders with the purchases recorded (outbox, archive), by country."""

from collections import Counter
from dataclasses import asdict, dataclass, field

from django.db.models import Count, QuerySet
from django.utils.module_loading import import_string

from tiktok_tracking import conf
from tiktok_tracking.adapters import clean_country, clean_order_id, configured_adapter_class
from tiktok_tracking.exceptions import InvalidOrderData, TikTokTrackingImproperlyConfigured
from tiktok_tracking.models import EVENT_TABLES, TrackedEvent
from tiktok_tracking.standards import PURCHASE_EVENT_NAMES

Status = TrackedEvent.Status

# Order ids looked up in the outbox per query: a few thousand orders never mean a few thousand
# queries, and no IN list grows past what every database accepts.
LOOKUP_CHUNK = 500

# Which column each row status is counted in; sending rows are still on their way.
STATUS_COLUMNS = {
    Status.DELIVERED: "delivered",
    Status.FAILED: "failed",
    Status.SUPPRESSED: "suppressed",
    Status.PENDING: "pending",
    Status.SENDING: "pending",
}
COLUMNS = ("country", "paid", "recorded", "delivered", "failed", "suppressed", "pending", "missing")


@dataclass(frozen=True)
class ReconcileLine:
    """One country's figures ("" is unknown, None the totals); paid/missing None if unknown."""

    country: str | None
    paid: int | None
    recorded: int
    delivered: int
    failed: int
    suppressed: int
    pending: int
    missing: int | None

    def as_dict(self):
        return asdict(self)


@dataclass
class PaidOrders:
    """What the shop's paid orders of the period came to, read through the order adapter."""

    by_country: Counter = field(default_factory=Counter)
    missing_by_country: Counter = field(default_factory=Counter)
    # ``(order_id, country)`` of paid orders with no purchase recorded, as many as asked for.
    missing: list = field(default_factory=list)
    # Orders whose id the adapter could not read: paid, but not comparable with the outbox.
    unreadable: int = 0


def purchase_names():
    """Every name a purchase may be recorded under: the configured one and TikTok's two."""
    return frozenset(PURCHASE_EVENT_NAMES | {conf.get("PURCHASE_EVENT")})


def recorded_counts(since, until, names=None, pixel_id=None):
    """``{(country, status): rows}`` of the purchases recorded in ``[since, until)`` (for one
    pixel if ``pixel_id``): one query."""
    counts = Counter()
    for model in EVENT_TABLES:
        rows = model.objects.filter(
            event__in=names or purchase_names(), created_at__gte=since, created_at__lt=until
        )
        if pixel_id is not None:
            rows = rows.filter(pixel_id=pixel_id)
        rows = rows.order_by().values_list("country", "status").annotate(rows=Count("pk"))
        for country, status, count in rows:
            counts[(country, status)] += count
    return dict(counts)


def paid_orders_source():
    """The shop's ``PAID_ORDERS`` callable, or None when the setting is not set."""
    path = conf.get("PAID_ORDERS")
    if not path:
        return None
    if callable(path):
        return path
    setting = f"{conf.SETTING_NAME}['PAID_ORDERS']"
    try:
        source = import_string(str(path))
    except ImportError as exc:
        raise TikTokTrackingImproperlyConfigured(
            f"{setting} = {path!r} could not be imported: {exc}"
        ) from exc
    if not callable(source):
        raise TikTokTrackingImproperlyConfigured(f"{setting} = {path!r} is not callable.")
    return source


def scan_paid_orders(orders, *, adapter_class=None, names=None, keep_missing=0, pixel=None):
    """Count ``orders`` by country and find those with no purchase recorded at all.

    A purchase recorded just outside the period still counts as recorded: the gap is what the
    outbox never got. Orders are read one by one (``.iterator()`` for a queryset) and looked up
    in chunks, so a month of orders is never held in memory. With ``pixel``, only the orders of
    the sites it tracks count, and only its rows.
    """
    adapter_class = adapter_class or configured_adapter_class()
    names = names or purchase_names()
    if isinstance(orders, QuerySet):
        orders = orders.iterator(chunk_size=2000)
    paid = PaidOrders()
    waiting = {}
    for order in orders:
        adapter = adapter_class(order)
        if pixel is not None and pixel.sites and not pixel.tracks_site(_site(adapter)):
            continue
        country = _country(adapter)
        paid.by_country[country] += 1
        try:
            order_id = clean_order_id(adapter.order_id())
        except Exception:
            # The receiver recorded such an order under an "invalid_" id: it cannot be matched.
            paid.unreadable += 1
            continue
        waiting[order_id] = country
        if len(waiting) >= LOOKUP_CHUNK:
            _find_missing(waiting, names, paid, keep_missing, pixel)
            waiting = {}
    _find_missing(waiting, names, paid, keep_missing, pixel)
    return paid


def _site(adapter):
    try:
        return adapter.site_id()
    except InvalidOrderData:
        # The receiver sends such an order to the pixels of every site only.
        return None


def _country(adapter):
    try:
        return clean_country(adapter.country()) or ""
    except InvalidOrderData:
        # Counted as unknown, as the receiver records it.
        return ""


def recorded_order_ids(order_ids, names, *, pixel=None, placeholders=True):
    """Which of ``order_ids`` have a row of one of the events ``names`` (outbox or archive).

    ``placeholders=False`` leaves out the failed rows kept without a payload, whose order could
    not be read when it was paid: recording it again replaces them.
    """
    recorded = set()
    for model in EVENT_TABLES:
        rows = model.objects.filter(event__in=names, order_id__in=list(order_ids))
        if pixel is not None:
            rows = rows.filter(pixel_id=pixel.pixel_id)
        if not placeholders:
            rows = rows.exclude(status=Status.FAILED, payload={})
        recorded.update(rows.order_by().values_list("order_id", flat=True).distinct())
    return recorded


def _find_missing(waiting, names, paid, keep_missing, pixel=None):
    if not waiting:
        return
    recorded = recorded_order_ids(waiting, names, pixel=pixel)
    for order_id, country in waiting.items():
        if order_id in recorded:
            continue
        paid.missing_by_country[country] += 1
        if len(paid.missing) < keep_missing:
            paid.missing.append((order_id, country))


def reconcile_lines(recorded, paid=None):
    """The per-country lines and the totals line (pure).

    ``recorded`` is :func:`recorded_counts`' answer, ``paid`` a :class:`PaidOrders` or None when
    the shop's paid orders are unknown. Countries are sorted by code, unknown last.
    """
    figures = {}

    def line(country):
        return figures.setdefault(
            country,
            {"recorded": 0, "delivered": 0, "failed": 0, "suppressed": 0, "pending": 0},
        )

    for (country, status), count in recorded.items():
        counts = line(country or "")
        counts["recorded"] += count
        column = STATUS_COLUMNS.get(status)
        if column:
            counts[column] += count
    if paid is not None:
        for country in paid.by_country:
            line(country)
    lines = [
        ReconcileLine(
            country=country,
            paid=None if paid is None else paid.by_country.get(country, 0),
            missing=None if paid is None else paid.missing_by_country.get(country, 0),
            **counts,
        )
        for country, counts in sorted(figures.items(), key=lambda item: (not item[0], item[0]))
    ]
    return lines, totals_line(lines, paid_known=paid is not None)


def totals_line(lines, *, paid_known):
    """The sum of ``lines`` (pure)."""

    def total(name):
        return sum(getattr(line, name) for line in lines)

    return ReconcileLine(
        country=None,
        paid=total("paid") if paid_known else None,
        recorded=total("recorded"),
        delivered=total("delivered"),
        failed=total("failed"),
        suppressed=total("suppressed"),
        pending=total("pending"),
        missing=total("missing") if paid_known else None,
    )
