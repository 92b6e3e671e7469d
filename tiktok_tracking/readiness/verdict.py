"""The readiness verdict of one market and window: may the shop's ad rules act on TikTok's numbers?

Pure: figures in (counted elsewhere from the outbox, the receipts, the shop's paid orders and
refunds), a verdict out, with every reason in words. Each rule reads the figures and says
``caution`` or ``not_ready`` with its reason, or nothing; the verdict is the worst of them. A
market with fewer paid orders than the sample size needs is ``insufficient_data``, never
``ready``, unless a sudden failure (the pixel gone silent, purchases stuck on the server, TikTok
refusing them) makes it ``not_ready``: a broken lane is broken however few orders showed it.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

READY = "ready"
CAUTION = "caution"
NOT_READY = "not_ready"
INSUFFICIENT_DATA = "insufficient_data"
VERDICTS = (READY, CAUTION, INSUFFICIENT_DATA, NOT_READY)  # from best to worst
SEVERITY = {verdict: rank for rank, verdict in enumerate(VERDICTS)}
# The windows every market is judged over, in days ending now.
WINDOWS = (1, 7, 30)


@dataclass(frozen=True)
class Thresholds:
    """Where each figure turns a market ``caution`` or ``not_ready`` (settings: READINESS)."""

    min_orders: int = 20
    coverage_caution: float = 0.90
    coverage_not_ready: float = 0.75
    double_count_caution: float = 0.02
    double_count_not_ready: float = 0.05
    pixel_silence_hours: float = 2.0
    pixel_silence_orders: int = 3
    undelivered_caution_minutes: float = 15.0
    undelivered_not_ready_minutes: float = 60.0
    latency_p95_caution_seconds: float = 600.0
    match_quality_caution: float = 4.0
    consent_withheld_caution: float = 0.40
    refunds_caution: float = 0.10
    refunds_not_ready: float = 0.25
    error_spike_minutes: float = 60.0
    error_spike_share: float = 0.20
    error_spike_events: int = 3

    def __post_init__(self):
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(
                    f"READINESS: {name.upper()} must be a number of at least 0, not {value!r}"
                )
        for low, high in (
            ("coverage_not_ready", "coverage_caution"),
            ("double_count_caution", "double_count_not_ready"),
            ("undelivered_caution_minutes", "undelivered_not_ready_minutes"),
            ("refunds_caution", "refunds_not_ready"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"READINESS: {low.upper()} must not be above {high.upper()}")
        if self.min_orders < 1:
            raise ValueError("READINESS: MIN_ORDERS must be at least 1")


@dataclass(frozen=True)
class MarketFigures:
    """What was counted for one market over one window (``window_days`` up to ``now``)."""

    market: str
    window_days: int
    now: datetime
    # Orders the shop was paid for (its PAID_ORDERS), None when it did not say; then the
    # purchases the app recorded stand in for them.
    paid_orders: int | None
    recorded_orders: int
    # Orders TikTok got the purchase of, from either lane (delivered, or the pixel's receipt).
    tracked_orders: int
    # Orders whose purchase consent withheld from both lanes, by reason.
    withheld_orders: int = 0
    withheld_by_reason: dict = field(default_factory=dict)
    merged: int = 0
    server_only: int = 0
    browser_only: int = 0
    # The pixel reported the purchase under the server event's id but another name
    # (CompletePayment beside Purchase), or the server lane sent it after TikTok's dedup
    # window: TikTok counts these twice.
    unmergeable: int = 0
    late_resends: int = 0
    # TikTok's latest answer to the purchases it answered in the last ERROR_SPIKE_MINUTES:
    # how many, and the refused ones by code (whatever the window: a spike is about now).
    recent_answers: int = 0
    recent_refusals: dict = field(default_factory=dict)
    oldest_undelivered_at: datetime | None = None
    latency_p50_seconds: float | None = None
    latency_p95_seconds: float | None = None
    match_quality: float | None = None
    last_receipt_at: datetime | None = None
    server_orders_since_last_receipt: int = 0
    # The refunds recorded in the window, as orders: each refund's share of its order's value
    # (a whole refund is 1, half of an order 0.5), so shops with several currencies add up.
    refunded_orders: float = 0.0

    @property
    def orders(self):
        """The orders the verdict is judged on: the shop's count, else the recorded ones."""
        return self.recorded_orders if self.paid_orders is None else self.paid_orders

    @property
    def trackable_orders(self):
        return max(self.orders - self.withheld_orders, 0)

    @property
    def coverage(self):
        """Tracked over trackable orders (consent-withheld ones apart); None without any."""
        trackable = self.trackable_orders
        return None if not trackable else min(self.tracked_orders / trackable, 1.0)

    @property
    def cpa_inflation(self):
        """The factor by which a rule's CPA (spend over TikTok's purchases) is too high."""
        coverage = self.coverage
        return None if not coverage else 1 / coverage

    @property
    def double_counted(self):
        return self.unmergeable + self.late_resends

    @property
    def recently_refused(self):
        return sum(self.recent_refusals.values())

    @property
    def double_count_share(self):
        return None if not self.tracked_orders else self.double_counted / self.tracked_orders

    @property
    def withheld_share(self):
        return None if not self.orders else self.withheld_orders / self.orders

    @property
    def refunded_share(self):
        """The refunded orders over the tracked ones: revenue TikTok counts that the shop gave
        back (at most 1)."""
        if not self.tracked_orders:
            return None
        return min(self.refunded_orders / self.tracked_orders, 1.0)

    @property
    def net_coverage(self):
        """Coverage with the refunded share of tracked value taken out: what the shop kept."""
        coverage, refunded = self.coverage, self.refunded_share
        if coverage is None:
            return None
        return coverage * (1 - min(refunded or 0.0, 1.0))


@dataclass(frozen=True)
class Finding:
    verdict: str
    reason: str
    # A sudden failure holds a market not_ready whatever its sample size.
    sudden: bool = False


@dataclass(frozen=True)
class Verdict:
    market: str
    window_days: int
    verdict: str
    reasons: tuple

    def as_dict(self):
        return {"verdict": self.verdict, "reasons": list(self.reasons)}


def percent(share):
    return f"{share * 100:.0f}%"


def _clock(moment):
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def graded(value, reason, caution, not_ready):
    """A finding for ``value`` above ``not_ready`` or ``caution``, else none."""
    if value > not_ready:
        return Finding(NOT_READY, reason)
    if value > caution:
        return Finding(CAUTION, reason)
    return None


def check_coverage(figures, limits):
    coverage = figures.coverage
    if coverage is None:
        return None
    base = "paid orders" if figures.paid_orders is not None else "recorded purchases"
    reason = (
        f"coverage {percent(coverage)} ({figures.tracked_orders} of "
        f"{figures.trackable_orders} {base})"
    )
    if figures.withheld_orders:
        reason += f", {figures.withheld_orders} withheld by consent apart"
    if coverage < limits.coverage_not_ready:
        return Finding(NOT_READY, reason + f": below {percent(limits.coverage_not_ready)}")
    if coverage < limits.coverage_caution:
        return Finding(CAUTION, reason + f": below {percent(limits.coverage_caution)}")
    return Finding(READY, reason)


def check_pixel_silence(figures, limits):
    """The pixel's receipts stopped while server purchases went on: a broken theme or CSP."""
    last = figures.last_receipt_at
    if last is None or figures.server_orders_since_last_receipt < limits.pixel_silence_orders:
        return None
    if figures.now - last < timedelta(hours=limits.pixel_silence_hours):
        return None
    return Finding(
        NOT_READY,
        f"pixel receipts stopped at {_clock(last)} while "
        f"{figures.server_orders_since_last_receipt} server purchases followed",
        sudden=True,
    )


def check_undelivered(figures, limits):
    """Purchases waiting on the server lane: a worker or broker down, TikTok refusing them."""
    oldest = figures.oldest_undelivered_at
    if oldest is None:
        return None
    minutes = (figures.now - oldest).total_seconds() / 60
    reason = f"oldest undelivered purchase waiting {minutes:.0f} min (since {_clock(oldest)})"
    if minutes >= limits.undelivered_not_ready_minutes:
        return Finding(NOT_READY, reason, sudden=True)
    if minutes >= limits.undelivered_caution_minutes:
        return Finding(CAUTION, reason)
    return None


def check_error_spike(figures, limits):
    """TikTok refusing the purchases sent to it now: a revoked token, a wrong pixel id, a
    malformed field after a release."""
    refused, answered = figures.recently_refused, figures.recent_answers
    if not answered or refused < limits.error_spike_events:
        return None
    if refused / answered < limits.error_spike_share:
        return None
    codes = sorted(figures.recent_refusals.items(), key=lambda item: (-item[1], item[0]))
    named = ", ".join(f"code {code}: {count}" for code, count in codes[:3])
    return Finding(
        NOT_READY,
        f"TikTok refused {refused} of the {answered} purchases it answered in the last "
        f"{limits.error_spike_minutes:.0f} min ({named})",
        sudden=True,
    )


def check_latency(figures, limits):
    p95 = figures.latency_p95_seconds
    if p95 is None or p95 < limits.latency_p95_caution_seconds:
        return None
    return Finding(CAUTION, f"purchases reach TikTok slowly: p95 {p95 / 60:.0f} min after payment")


def check_double_count(figures, limits):
    share = figures.double_count_share
    if not share:
        return None
    parts = (
        (figures.unmergeable, "reported by the pixel under another event name"),
        (figures.late_resends, "sent after the dedup window"),
    )
    named = ", ".join(f"{count} {what}" for count, what in parts if count)
    reason = (
        f"{figures.double_counted} purchases counted twice by TikTok ({named}): "
        f"{percent(share)} of tracked"
    )
    return graded(share, reason, limits.double_count_caution, limits.double_count_not_ready)


def check_match_quality(figures, limits):
    score = figures.match_quality
    if score is None or score >= limits.match_quality_caution:
        return None
    return Finding(
        CAUTION,
        f"estimated match quality {score:.1f} of 10: TikTok attributes fewer purchases to ads",
    )


def check_consent(figures, limits):
    share = figures.withheld_share
    if share is None or share <= limits.consent_withheld_caution:
        return None
    reasons = ", ".join(
        f"{count} {reason}" for reason, count in sorted(figures.withheld_by_reason.items())
    )
    detail = f" ({reasons})" if reasons else ""
    return Finding(
        CAUTION,
        f"{percent(share)} of orders withheld from TikTok by consent{detail}: "
        "its numbers describe the rest",
    )


def check_refunds(figures, limits):
    share = figures.refunded_share
    if not share:
        return None
    reason = (
        f"{percent(share)} of the tracked value refunded since: TikTok still counts it "
        f"(net coverage {percent(figures.net_coverage or 0)})"
    )
    return graded(share, reason, limits.refunds_caution, limits.refunds_not_ready)


RULES = (
    check_pixel_silence,
    check_error_spike,
    check_undelivered,
    check_coverage,
    check_double_count,
    check_refunds,
    check_latency,
    check_consent,
    check_match_quality,
)


def judge(figures, limits=None):
    """The verdict of ``figures`` under ``limits``, its reasons worst first."""
    limits = limits or Thresholds()
    findings = [finding for rule in RULES if (finding := rule(figures, limits))]
    worst = max((SEVERITY[f.verdict] for f in findings), default=SEVERITY[READY])
    verdict = VERDICTS[worst]
    if figures.orders < limits.min_orders and not any(
        f.sudden and f.verdict == NOT_READY for f in findings
    ):
        verdict = INSUFFICIENT_DATA
        findings.insert(
            0,
            Finding(
                INSUFFICIENT_DATA,
                f"{figures.orders} orders in the last {figures.window_days} days: below the "
                f"{limits.min_orders} a verdict needs",
            ),
        )
    findings.sort(key=lambda f: -SEVERITY[f.verdict])
    return Verdict(
        market=figures.market,
        window_days=figures.window_days,
        verdict=verdict,
        reasons=tuple(f.reason for f in findings),
    )
