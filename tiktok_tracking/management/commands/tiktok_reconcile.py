"""``manage.py tiktok_reconcile``: paid orders against recorded and delivered purchases."""

import io
import json
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tiktok_tracking import conf
from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured
from tiktok_tracking.pixels import configured_pixels, named_pixel
from tiktok_tracking.reconcile import (
    COLUMNS,
    paid_orders_source,
    purchase_names,
    reconcile_lines,
    recorded_counts,
    scan_paid_orders,
)
from tiktok_tracking.replica import PRIMARY, reports_read
from tiktok_tracking.spreadsheet import SpreadsheetSafeWriter

FORMATS = ("table", "csv", "json")
UNKNOWN_COUNTRY = "unknown"
TOTAL = "total"
# Shown in the table where the shop's paid orders are not known.
NOT_KNOWN = "?"

HEADERS = {
    "country": "country",
    "paid": "paid orders",
    "recorded": "recorded",
    "delivered": "delivered",
    "failed": "failed",
    "suppressed": "suppressed",
    "pending": "pending",
    "missing": "missing",
}


def country_label(line):
    if line.country is None:
        return TOTAL
    return line.country or UNKNOWN_COUNTRY


def format_table(lines, total):
    """The lines and the totals as an aligned text table (pure)."""
    header = [HEADERS[name] for name in COLUMNS]
    body = [_cells(line, missing=NOT_KNOWN) for line in [*lines, total]]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(COLUMNS))]

    def render(row):
        # Country left-aligned, figures right-aligned so their digits line up.
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return [render(header), rule, *(render(row) for row in body[:-1]), rule, render(body[-1])]


def format_csv(lines, total, missing=None):
    """The lines and the totals as CSV; ``missing`` orders follow after a blank line (pure).

    An order id or a country that a spreadsheet would evaluate (``=HYPERLINK(...)``) is
    written as text; the JSON report keeps every value as it is.
    """
    out = io.StringIO()
    writer = SpreadsheetSafeWriter(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for line in [*lines, total]:
        writer.writerow(_cells(line, missing=""))
    if missing is not None:
        writer.writerow([])
        writer.writerow(["order_id", "country"])
        for order_id, country in missing:
            writer.writerow([order_id, country or UNKNOWN_COUNTRY])
    return out.getvalue()


def format_json(lines, total, *, since, until, paid, missing=None, read_from=PRIMARY):
    """The report as JSON: the period, one object per country, the totals, notes (pure)."""
    report = {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "read_from": read_from.as_dict(),
        "paid_orders_known": paid is not None,
        # Unknown is null, as in the missing list.
        "countries": [{**line.as_dict(), "country": line.country or None} for line in lines],
        "totals": {key: value for key, value in total.as_dict().items() if key != "country"},
    }
    if paid is not None:
        report["unreadable_orders"] = paid.unreadable
    if missing is not None:
        report["missing"] = [
            {"order_id": order_id, "country": country or None} for order_id, country in missing
        ]
    return json.dumps(report, indent=2)


def _cells(line, *, missing):
    values = line.as_dict()
    cells = [country_label(line)]
    for name in COLUMNS[1:]:
        value = values[name]
        cells.append(missing if value is None else str(value))
    return cells


def chosen_pixel(pixel_id):
    """The pixel to reconcile: ``pixel_id``'s, or the only one; None if none is configured."""
    pixels = configured_pixels()
    if pixel_id:
        return named_pixel(pixels, pixel_id)
    if len(pixels) > 1:
        raise CommandError(
            "Several pixels are configured, each with its own purchases: choose one with "
            f"--pixel ({', '.join(pixel.pixel_id for pixel in pixels)})."
        )
    return pixels[0] if pixels else None


class Command(BaseCommand):
    help = (
        "Reconcile the shop's paid orders (TIKTOK_TRACKING['PAID_ORDERS']) with the purchases "
        "recorded in the outbox over the last N days, by country: recorded, delivered, failed, "
        "suppressed by consent, pending, and paid orders with no purchase recorded at all."
    )
    # A report: it must run even while, say, the token is being replaced.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=7, help="The period: the last N days (default: 7)."
        )
        parser.add_argument("--format", choices=FORMATS, default="table", help="Output format.")
        parser.add_argument(
            "--show-missing",
            type=int,
            default=0,
            metavar="N",
            help="List up to N paid orders with no purchase recorded.",
        )
        parser.add_argument(
            "--pixel",
            metavar="ID",
            help="The pixel to reconcile; needed when several are configured (each has its own "
            "rows, and perhaps its own sites' orders).",
        )

    def handle(self, *args, **options):
        days = options["days"]
        if days < 1:
            raise CommandError("--days must be at least 1.")
        if options["show_missing"] < 0:
            raise CommandError("--show-missing must not be negative.")
        until = timezone.now()
        since = until - timedelta(days=days)
        names = purchase_names()
        try:
            source = paid_orders_source()
            pixel = chosen_pixel(options["pixel"])
        except TikTokTrackingImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None

        paid = None
        # Read from the replica (REPLICA_DATABASE), which is first given time to catch up.
        with reports_read(batch=True) as read_from:
            if source is not None:
                try:
                    paid = scan_paid_orders(
                        source(since, until),
                        names=names,
                        keep_missing=options["show_missing"],
                        pixel=pixel,
                    )
                except TikTokTrackingImproperlyConfigured as exc:
                    raise CommandError(str(exc)) from None
            pixel_id = pixel.pixel_id if pixel is not None else None
            lines, total = reconcile_lines(recorded_counts(since, until, names, pixel_id), paid)
        missing = paid.missing if paid is not None and options["show_missing"] else None

        output_format = options["format"]
        if output_format == "json":
            self.stdout.write(
                format_json(
                    lines,
                    total,
                    since=since,
                    until=until,
                    paid=paid,
                    missing=missing,
                    read_from=read_from,
                )
            )
        elif output_format == "csv":
            self.stdout.write(format_csv(lines, total, missing), ending="")
        else:
            self.write_table(lines, total, since, until, paid, missing)
        self.write_notes(paid, options["show_missing"])
        if read_from.replica:
            style = self.style.WARNING if read_from.lagging else self.style.NOTICE
            self.stderr.write(read_from.label(), style)

    def write_table(self, lines, total, since, until, paid, missing):
        self.stdout.write(
            f"Purchases from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} {until:%Z}"
        )
        for row in format_table(lines, total):
            self.stdout.write(row)
        if missing is not None:
            shown = len(missing)
            self.stdout.write(
                f"Paid orders with no purchase recorded ({shown} of {total.missing} shown):"
            )
            for order_id, country in missing:
                self.stdout.write(f"  {order_id}  {country or UNKNOWN_COUNTRY}")

    def write_notes(self, paid, show_missing):
        # On stderr, so that CSV and JSON on stdout stay clean for a pipe.
        if paid is None:
            self.stderr.write(
                f"Paid orders are unknown: set {conf.SETTING_NAME}['PAID_ORDERS'] to a callable "
                "(since, until) -> paid orders to compare them with the outbox. Showing "
                "recorded purchases only.",
                self.style.WARNING,
            )
            if show_missing:
                self.stderr.write("--show-missing needs PAID_ORDERS.", self.style.WARNING)
            return
        if paid.unreadable:
            self.stderr.write(
                f"{paid.unreadable} paid order(s) whose id the order adapter could not read "
                "were counted as paid but not compared with the outbox.",
                self.style.WARNING,
            )
