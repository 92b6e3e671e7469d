"""Paid orders by the thousand, and the exactly-once verdict judged from TikTok's side.

The verdict is taken from the sandbox's records, not from the outbox: the outbox can only say
what the app believes it sent; the sandbox says what TikTok received and accepted.
"""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction

from tests.shop.models import Order, OrderLine
from tiktok_tracking.context import ConsentSnapshot, save_context
from tiktok_tracking.events import BrowserContext, event_id_for
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.signals import payment_completed

PURCHASE = "Purchase"
Status = TrackedEvent.Status
UNFINISHED = (Status.PENDING, Status.SENDING)


class PaymentDeclined(Exception):
    """Raised inside a payment's transaction to roll it back after the signal was sent."""


@dataclass
class Verdict:
    """What TikTok received, against what the shop committed and consent allowed."""

    expected: int
    counted: int
    missing: list
    unexpected: list
    leaked: list
    resent: int

    def problems(self, *, allow_resends):
        found = []
        if self.missing:
            found.append(
                f"{len(self.missing)} expected Purchase(s) never accepted: {self.missing[:5]}"
            )
        if self.unexpected:
            found.append(
                f"{len(self.unexpected)} Purchase(s) accepted that must not be: "
                f"{self.unexpected[:5]}"
            )
        if self.leaked:
            found.append(f"{len(self.leaked)} forbidden event(s) sent at all: {self.leaked[:5]}")
        if self.resent and not allow_resends:
            found.append(f"{self.resent} accepted copies of events already accepted")
        return found


def judge(accepted_ids, sent_ids, *, expected, forbidden):
    """The verdict over the event_ids TikTok accepted and those any request carried.

    TikTok counts an event_id once (it deduplicates repeats within 48 hours), so ``counted`` is
    the number of distinct expected ids accepted; ``resent`` counts the extra copies, which
    cost nothing in the numbers but show a request whose answer the sender never saw.
    """
    accepted = Counter(accepted_ids)
    expected, forbidden = set(expected), set(forbidden)
    return Verdict(
        expected=len(expected),
        counted=len(expected & accepted.keys()),
        missing=sorted(expected - accepted.keys()),
        unexpected=sorted(accepted.keys() - expected),
        leaked=sorted(forbidden & set(sent_ids)),
        resent=sum(accepted.values()) - len(accepted),
    )


def sandbox_ids(sandbox, prefix):
    """``(accepted, sent)``: Purchase event_ids of this run in accepted requests and in any."""
    marker = f"order_{prefix}"
    accepted = [
        e["event_id"]
        for e in sandbox.events()
        if e["event"] == PURCHASE and str(e["event_id"]).startswith(marker)
    ]
    sent = []
    for request in sandbox.requests:
        body = request["body"]
        data = body.get("data") if isinstance(body, dict) else None
        for item in data if isinstance(data, list) else ():
            if isinstance(item, dict) and str(item.get("event_id", "")).startswith(marker):
                sent.append(item["event_id"])
    return accepted, sent


@dataclass
class OrderBook:
    """The orders of one scenario: what was committed, rolled back or kept back by consent."""

    prefix: str
    # Committed, allowed by consent: TikTok must count each exactly once.
    expected: set = field(default_factory=set)
    # Committed, kept back by consent: never sent at all.
    withheld: set = field(default_factory=set)
    # Payment rolled back: never recorded, never sent.
    rolled_back: set = field(default_factory=set)
    rolled_back_numbers: set = field(default_factory=set)
    # Committed and sent, but refused by TikTok as invalid: failed, never counted.
    rejected: set = field(default_factory=set)
    # When the scenario began, for its duration in the report.
    started: float = field(default_factory=time.monotonic)
    checkout_seconds: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _count: int = 0

    def create(self, count, *, country="US", visitor_consent=None):
        """``count`` unpaid orders, each with the context its checkout would have captured.

        ``visitor_consent`` "granted" gives each order a visitor who granted consent there.
        """
        start = self._count
        self._count += count
        numbers = [f"{self.prefix}{index:05d}" for index in range(start, start + count)]
        with transaction.atomic():
            orders = Order.objects.bulk_create(
                Order(
                    number=number,
                    email=f"buyer-{number}@example.com",
                    phone="+1 202 555 0143",
                    country=country,
                    currency="EUR" if country != "US" else "USD",
                    total=Decimal("42.50"),
                    customer_id=f"C-{number}",
                )
                for number in numbers
            )
            OrderLine.objects.bulk_create(
                OrderLine(order=order, sku="SKU-9", name="Mug", quantity=1, price=order.total)
                for order in orders
            )
            for order in orders:
                snapshot = ConsentSnapshot(
                    visitor_id=self.visitor_of(order),
                    consent_status=visitor_consent,
                    country=country,
                )
                context = BrowserContext(ip="203.0.113.9", user_agent="Mozilla/5.0 (faults)")
                save_context(order.number, context, snapshot, exists=False)
        return orders

    @staticmethod
    def visitor_of(order):
        return f"v-{order.number}"

    @staticmethod
    def event_id(order):
        return event_id_for(PURCHASE, order.number)

    def pay(self, orders, *, expect=True, threads=2, signals=1, rollback=False, twice=False):
        """Confirm each order's payment in its own transaction, as a webhook handler does.

        ``expect`` says whether TikTok must receive the orders' Purchases (False where consent
        keeps them back); ``signals`` sends the signal that many times in the transaction;
        ``rollback`` declines the payment after the signal, so the transaction rolls back;
        ``twice`` confirms each payment twice, from two threads at once (a webhook retried
        while the first delivery is still running).
        """

        def pay_one(order):
            started = time.perf_counter()
            try:
                with transaction.atomic():
                    Order.objects.filter(pk=order.pk).update(paid=True)
                    for _ in range(signals):
                        payment_completed.send(sender=Order, order=order)
                    if rollback:
                        raise PaymentDeclined
            except PaymentDeclined:
                pass
            elapsed = time.perf_counter() - started
            with self._lock:
                self.checkout_seconds.append(elapsed)

        def run(chunk):
            try:
                for order in chunk:
                    pay_one(order)
            finally:
                connection.close()

        # Each order's two confirmations sit side by side, so they land on different threads.
        work = [order for order in orders for _ in range(2 if twice else 1)]
        chunks = [work[index::threads] for index in range(threads)]
        with ThreadPoolExecutor(threads, thread_name_prefix="pay") as pool:
            for future in [pool.submit(run, chunk) for chunk in chunks]:
                future.result()
        ids = {self.event_id(order) for order in orders}
        if rollback:
            self.rolled_back |= ids
            self.rolled_back_numbers |= {order.number for order in orders}
        elif expect:
            self.expected |= ids - self.rejected
        else:
            self.withheld |= ids

    def withdraw(self, orders):
        """Move ``orders`` from expected to withheld: their visitors withdrew consent."""
        ids = {self.event_id(order) for order in orders}
        self.expected -= ids
        self.withheld |= ids

    @property
    def forbidden(self):
        return self.withheld | self.rolled_back

    @property
    def committed(self):
        return len(self.expected) + len(self.withheld) + len(self.rejected)

    def reject(self, orders):
        """Mark ``orders`` as ones TikTok will refuse (never expected); their event_ids."""
        ids = {self.event_id(order) for order in orders}
        self.expected -= ids
        self.rejected |= ids
        return ids

    def paid_mix(
        self, count=1000, *, threads=2, signals=1, twice=False, after_create=None, before_half=None
    ):
        """The standard mix: ``count`` committed orders (5% in an opt-in region without
        consent, so suppressed), plus 5% more whose payment rolls back.

        ``after_create`` gets the allowed orders before any is paid; ``before_half`` is called
        when half of them are paid: the moment to strike.
        """
        suppressed = max(count // 20, 1)
        allowed = self.create(count - suppressed)
        denied = self.create(suppressed, country="DE")
        declined = self.create(max(count // 20, 1))
        if after_create is not None:
            after_create(allowed)
        half = len(allowed) // 2
        self.pay(allowed[:half], threads=threads, signals=signals, twice=twice)
        self.pay(declined, threads=threads, rollback=True, expect=False)
        if before_half is not None:
            before_half()
        self.pay(allowed[half:], threads=threads, signals=signals, twice=twice)
        self.pay(denied, threads=threads, signals=signals, twice=twice, expect=False)
        return allowed, denied, declined

    # --- the outbox's side ---

    def rows(self):
        return TrackedEvent.objects.filter(order_id__startswith=self.prefix)

    def unfinished(self):
        return self.rows().filter(status__in=UNFINISHED).count()

    def statuses(self):
        return dict(Counter(self.rows().values_list("status", flat=True)))
