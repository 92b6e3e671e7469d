"""manage.py tiktok_health: each market's readiness verdict, for people, cron and CI."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured
from tiktok_tracking.readiness import figures, report, store
from tiktok_tracking.readiness.verdict import CAUTION, INSUFFICIENT_DATA, NOT_READY

# Exit codes: 0 every market may be acted on; 1 a market is not ready; 2 (with --strict) a
# market needs caution or has too few orders for a verdict.
EXIT_NOT_READY = 1
EXIT_STRICT = 2


def percent(value):
    return "—" if value is None else f"{value * 100:.0f}%"


class Command(BaseCommand):
    help = (
        "Say, market by market, whether TikTok's numbers can be trusted by the shop's ad rules "
        "(ready, caution, not_ready, insufficient_data), with the reasons. Exits 1 when a "
        "market is not ready."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument(
            "--market", action="append", metavar="NAME", help="Only this market (repeatable)."
        )
        parser.add_argument(
            "--window",
            type=int,
            choices=figures.WINDOWS,
            help="The window a market's verdict is read from (default: READINESS ['WINDOW_DAYS']).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Also exit non-zero (2) when a market needs caution or has too few orders.",
        )
        parser.add_argument(
            "--skip-paid-orders",
            action="store_true",
            help="Do not read the shop's PAID_ORDERS: judge on the recorded purchases.",
        )

    def handle(self, *args, **options):
        try:
            document = store.build_report(
                timezone.now(),
                paid=not options["skip_paid_orders"],
                window_days=options["window"],
            )
        except (TikTokTrackingImproperlyConfigured, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if options["market"]:
            wanted = set(options["market"])
            unknown = wanted - {market["market"] for market in document["markets"]}
            if unknown:
                raise CommandError(
                    f"No figures for market(s) {', '.join(sorted(unknown))}: no purchase, paid "
                    "order or undelivered event in the last 30 days."
                )
            document["markets"] = [m for m in document["markets"] if m["market"] in wanted]

        if options["json"]:
            self.stdout.write(json.dumps(document, indent=2, sort_keys=False))
        else:
            self.write_table(document)

        worst = report.worst(document)
        if worst == NOT_READY:
            raise SystemExit(EXIT_NOT_READY)
        if options["strict"] and worst in (CAUTION, INSUFFICIENT_DATA):
            raise SystemExit(EXIT_STRICT)

    def write_table(self, document):
        window = str(document["window_days"])
        self.stdout.write(
            f"Rule readiness over the last {window} day(s), {document['generated_at']}"
        )
        if not document["paid_orders_known"]:
            self.stdout.write(
                f"(paid orders unknown: set {conf.SETTING_NAME}['PAID_ORDERS']; coverage is "
                "judged on the recorded purchases)"
            )
        if not document["markets"]:
            self.stdout.write("No market has purchases yet.")
            return
        header = f"{'market':<10} {'verdict':<18} {'coverage':>8} {'tracked':>8} {'orders':>7}"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for market in document["markets"]:
            counted = market["windows"][window]["figures"]
            orders = counted["paid_orders"]
            orders = counted["recorded_orders"] if orders is None else orders
            self.stdout.write(
                f"{market['market']:<10} {market['verdict']:<18} "
                f"{percent(counted['coverage']):>8} {counted['tracked_orders']:>8} {orders:>7}"
            )
            for reason in market["reasons"]:
                self.stdout.write(f"    {reason}")
