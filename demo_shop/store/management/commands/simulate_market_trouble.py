"""``manage.py simulate_market_trouble``: break one country's pixel or worker in the demo.

Shows rule readiness at work without waiting hours for real trouble. It places paid orders for
one country through the shop's real path (a checkout request with the shopper's consent and
country, ``capture_context``, ``payment_completed``), with the history the trouble needs moved
back in time, judges every market at once (the periodic task's ``assess_readiness``), and
prints that market's verdict. The dashboard's market table and the readiness feed show the
same. ``--clear`` removes the simulated orders and judges again.

- ``--trouble pixel``: purchases the pixel reported until 3 hours ago, then purchases the server
  lane alone saw (a theme release broke the pixel tag).
- ``--trouble worker``: purchases delivered as usual, then purchases waiting for 90 minutes that
  no worker has taken (the worker or the broker stopped).
"""

import secrets
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils import timezone

from demo_shop.store.models import Order, OrderLine, Product
from demo_shop.store.views import COUNTRIES, COUNTRY_COOKIE
from tiktok_tracking import capture_context
from tiktok_tracking.models import (
    EVENT_TABLES,
    BrowserReceipt,
    CheckoutContext,
    TrackedEvent,
)
from tiktok_tracking.pixels import configured_pixels
from tiktok_tracking.readiness import alerts, store
from tiktok_tracking.receipts import record_receipt
from tiktok_tracking.signals import payment_completed
from tiktok_tracking.visitor import CONSENT_COOKIE, set_consent_cookie

PREFIX = "SIM-"
HEALTHY_ORDERS = 25
TROUBLED_ORDERS = 6


def consenting_request(country):
    """A checkout request from a shopper in ``country`` who granted consent."""
    granted = HttpResponse()
    set_consent_cookie(granted, "granted")
    request = RequestFactory().post("/checkout/")
    request.COOKIES[CONSENT_COOKIE] = granted.cookies[CONSENT_COOKIE].value
    request.COOKIES[COUNTRY_COOKIE] = country
    return request


def place_paid_order(country, product, paid_at):
    """One order paid through the shop's own path; returns its number."""
    order = Order.objects.create(
        number=f"{PREFIX}{country}-{secrets.token_hex(4)}",
        email=f"shopper-{secrets.token_hex(3)}@example.com",
        country=country,
        currency=product.currency,
        total=product.price,
        status=Order.Status.PAID,
        paid_at=paid_at,
    )
    OrderLine.objects.create(
        order=order, product=product, sku=product.sku, name=product.name, price=product.price
    )
    capture_context(consenting_request(country), order)
    with transaction.atomic():
        payment_completed.send(sender=Order, order=order, request=None)
    return order.number


def rows_of(numbers):
    return TrackedEvent.objects.filter(order_id__in=numbers)


class Command(BaseCommand):
    help = (
        "Simulate a broken pixel or a stopped worker for one country of the demo, then judge "
        "rule readiness: the market turns not_ready on the dashboard, in the feed and in "
        "tiktok_health. --clear removes the simulated orders."
    )

    def add_arguments(self, parser):
        parser.add_argument("--country", default="DE", help="Two-letter country (default DE).")
        parser.add_argument("--trouble", choices=("pixel", "worker"), default="pixel")
        parser.add_argument(
            "--clear", action="store_true", help="Remove every simulated order, then judge."
        )

    def handle(self, *args, **options):
        country = options["country"].strip().upper()
        if country not in dict(COUNTRIES):
            raise CommandError(
                f"--country must be one of the demo's countries: {', '.join(dict(COUNTRIES))}."
            )
        if options["clear"]:
            self.clear()
        else:
            product = Product.objects.order_by("sku").first()
            if product is None:
                raise CommandError("No product: run manage.py seed_demo first.")
            if options["trouble"] == "pixel":
                self.break_pixel(country, product)
            else:
                self.stop_worker(country, product)
        # None when the beat's own run stored its report first: that one judged the same.
        report = store.assess() or store.latest()
        alerts.deliver_alerts()
        market = next((m for m in report.document["markets"] if m["market"] == country), None)
        if market is None:
            self.stdout.write(f"{country}: no purchases in the last 30 days.")
            return
        self.stdout.write(f"{country} is now {market['verdict']}:")
        for reason in market["reasons"]:
            self.stdout.write(f"  {reason}")
        self.stdout.write(
            "See the market table on the health dashboard, GET /tiktok/health/ or "
            "manage.py tiktok_health."
        )

    def break_pixel(self, country, product):
        now = timezone.now()
        before = now - timedelta(hours=3, minutes=30)
        pixel_id = configured_pixels()[0].pixel_id
        seen = [place_paid_order(country, product, before) for _ in range(HEALTHY_ORDERS)]
        rows_of(seen).update(created_at=before, event_time=before)
        for row in rows_of(seen).values("event", "event_id"):
            record_receipt(pixel_id, row["event"], row["event_id"], now=now - timedelta(hours=3))
        # The theme release: from here on, the pixel reports nothing.
        for _ in range(TROUBLED_ORDERS):
            place_paid_order(country, product, now)
        self.stdout.write(
            f"{HEALTHY_ORDERS} {country} orders the pixel reported until 3 hours ago, then "
            f"{TROUBLED_ORDERS} it never saw."
        )

    def stop_worker(self, country, product):
        now = timezone.now()
        pixel_id = configured_pixels()[0].pixel_id
        delivered = [place_paid_order(country, product, now) for _ in range(HEALTHY_ORDERS)]
        for row in rows_of(delivered).values("event", "event_id"):
            record_receipt(pixel_id, row["event"], row["event_id"], now=now)
        waited = now - timedelta(minutes=90)
        stuck = [place_paid_order(country, product, waited) for _ in range(TROUBLED_ORDERS)]
        # No worker took them: due again only tomorrow, as if none had run for 90 minutes.
        rows_of(stuck).update(created_at=waited, next_attempt_at=now + timedelta(days=1))
        self.stdout.write(
            f"{HEALTHY_ORDERS} {country} orders as usual, then {TROUBLED_ORDERS} waiting for 90 "
            "minutes that no worker has taken."
        )

    def clear(self):
        numbers = list(
            Order.objects.filter(number__startswith=PREFIX).values_list("number", flat=True)
        )
        event_ids = set()
        for model in EVENT_TABLES:
            rows = model.objects.filter(order_id__in=numbers)
            event_ids |= set(rows.values_list("event_id", flat=True))
            rows.delete()
        BrowserReceipt.objects.filter(event_id__in=event_ids).delete()
        CheckoutContext.objects.filter(order_id__in=numbers).delete()
        Order.objects.filter(number__in=numbers).delete()
        self.stdout.write(f"{len(numbers)} simulated orders removed.")
