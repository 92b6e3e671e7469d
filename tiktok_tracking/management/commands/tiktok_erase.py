"""``manage.py tiktok_erase``: erase one shopper's personal data, by email, phone, id or order."""

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from tiktok_tracking.erasure import erase_personal_data


def summary_lines(report):
    """What the erasure did, or would do in a dry run, table by table (pure but for the
    models' names). Never a value of the shopper's: only counts."""
    if not report.matched:
        return ["Nothing found: no row of the app carries these keys."]
    verb = "Would erase" if report.dry_run else "Erased"
    lines = [
        f"{verb} the personal data of {report.orders} order(s) and {report.visitors} visitor(s):"
    ]
    for name, table in report.tables.items():
        if not table.matched:
            continue
        label = apps.get_model("tiktok_tracking", name)._meta.verbose_name_plural
        parts = [f"{table.matched} found"]
        if table.blanked:
            parts.append(f"{table.blanked} blanked")
        if table.deleted:
            parts.append(f"{table.deleted} deleted")
        if table.kept:
            parts.append(f"{table.kept} kept (no personal data)")
        lines.append(f"  {label}: {', '.join(parts)}")
    if report.suppressed:
        waiting = "would be" if report.dry_run else "are"
        lines.append(
            f"{report.suppressed} event(s) still waiting to be sent {waiting} suppressed: "
            "never sent."
        )
    return lines


class Command(BaseCommand):
    help = (
        "Erase what the TikTok tracking app holds about one shopper: found by email, phone, "
        "customer id or order id (hashed as the app hashes them), blanked in the outbox, the "
        "archive and the checkout contexts, consent records deleted. Values are never printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--email", help="The shopper's email address (or its SHA-256).")
        parser.add_argument(
            "--phone", help="The shopper's phone number, best with its country code (+49...)."
        )
        parser.add_argument(
            "--country",
            metavar="CODE",
            help="The order's country (ISO code), to read a --phone written without +.",
        )
        parser.add_argument(
            "--external-id", help="The shopper's customer id, as the order adapter reads it."
        )
        parser.add_argument(
            "--order-id",
            "--order",
            dest="order_id",
            action="append",
            metavar="ORDER_ID",
            help="An order of the shopper (repeat for several orders).",
        )
        parser.add_argument(
            "--keep-consent-records",
            action="store_true",
            help="Keep the visitors' consent records (what may show that you had consent).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be erased; change nothing."
        )

    def handle(self, *args, **options):
        try:
            report = erase_personal_data(
                email=options["email"],
                phone=options["phone"],
                country=options["country"],
                external_id=options["external_id"],
                order_id=options["order_id"],
                keep_consent_records=options["keep_consent_records"],
                dry_run=options["dry_run"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] == 0:
            return
        for line in summary_lines(report):
            self.stdout.write(line)
