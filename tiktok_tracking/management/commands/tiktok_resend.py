"""``manage.py tiktok_resend``: requeue recorded events by filter, as the admin's resend does."""

from datetime import datetime, time, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from tiktok_tracking.management.progress import ProgressBar
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.resend import CHUNK_SIZE, REFUSAL_REASONS, resend_events

Status = TrackedEvent.Status

# Pending and sending rows are in the queue already: asking for them would only be refused.
RESENDABLE_STATUSES = (Status.FAILED, Status.DELIVERED, Status.SUPPRESSED)
# How many refused event_ids -v 2 lists.
LISTED_REFUSALS = 50


def parse_moment(value, option):
    """``value`` (an ISO date or date-time) as an aware datetime; a date means its midnight."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"{option} {value!r} is not an ISO date (2025-01-31) or date-time.")
        moment = datetime.combine(day, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def created_between(options, now):
    """``(since, until)`` from --since/--until/--days (each may be None)."""
    since = parse_moment(options["since"], "--since") if options["since"] else None
    until = parse_moment(options["until"], "--until") if options["until"] else None
    if options["days"] is not None:
        if since is not None:
            raise CommandError("Use --days or --since, not both.")
        if options["days"] < 1:
            raise CommandError("--days must be at least 1.")
        since = now - timedelta(days=options["days"])
    if since and until and since >= until:
        raise CommandError("--since must be before --until.")
    return since, until


def filtered_events(options, now):
    """The TrackedEvent rows the command's filters select."""
    rows = TrackedEvent.objects.filter(status=options["status"])
    since, until = created_between(options, now)
    if since:
        rows = rows.filter(created_at__gte=since)
    if until:
        rows = rows.filter(created_at__lt=until)
    if options["code"] is not None:
        rows = rows.filter(last_code=options["code"])
    if options["order_id"]:
        rows = rows.filter(order_id__in=options["order_id"])
    if options["event"]:
        rows = rows.filter(event=options["event"])
    if options["pixel"]:
        rows = rows.filter(pixel_id=options["pixel"])
    return rows


def summary_lines(report, *, dry_run):
    """What the resend did, or would do in a dry run (pure)."""
    verb = "Would requeue" if dry_run else "Requeued"
    lines = [
        f"Matched {report.matched} event(s).",
        f"{verb} {report.requeued} event(s) with their own event_ids.",
    ]
    if report.refused_total:
        lines.append(f"Refused {report.refused_total}:")
        for reason, count in sorted(report.refused.items()):
            if count:
                lines.append(f"  {count} {REFUSAL_REASONS[reason]}")
    return lines


class Command(BaseCommand):
    help = (
        "Requeue recorded TikTok events (failed ones by default) to be sent again with the same "
        "event_id, like the admin's resend action. Rows older than 48 h are refused: TikTok "
        "would count them twice."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--status",
            default=Status.FAILED,
            choices=[str(status) for status in RESENDABLE_STATUSES],
            help="Only rows with this status (default: failed).",
        )
        parser.add_argument(
            "--code", type=int, help="Only rows whose last TikTok code is this (e.g. 40001)."
        )
        parser.add_argument("--since", help="Only rows recorded at or after this ISO date/time.")
        parser.add_argument("--until", help="Only rows recorded before this ISO date/time.")
        parser.add_argument(
            "--days", type=int, help="Only rows recorded in the last N days (instead of --since)."
        )
        parser.add_argument(
            "--order-id",
            action="append",
            metavar="ORDER_ID",
            help="Only this order's rows (repeat for several orders).",
        )
        parser.add_argument("--event", help="Only this event name (e.g. Purchase).")
        parser.add_argument("--pixel", help="Only rows of this pixel id.")
        parser.add_argument(
            "--test-event-code",
            default="",
            metavar="CODE",
            help="Send them with this test event code (Events Manager > Test events).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be requeued; change nothing."
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=CHUNK_SIZE,
            help=f"Rows read and requeued per statement (default: {CHUNK_SIZE}).",
        )
        progress = parser.add_mutually_exclusive_group()
        progress.add_argument(
            "--progress",
            action="store_true",
            help="Show the progress bar even when stderr is not a terminal.",
        )
        progress.add_argument(
            "--no-progress", dest="progress", action="store_false", help="No progress bar."
        )
        # Neither flag: a bar only on a terminal (decided in handle()).
        parser.set_defaults(progress=None)

    def handle(self, *args, **options):
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        now = timezone.now()
        rows = filtered_events(options, now)
        dry_run = options["dry_run"]
        verbosity = options["verbosity"]
        show_progress = options["progress"]
        if show_progress is None:
            show_progress = verbosity > 0 and self.stderr.isatty()
        # Counting costs one query; only the bar needs the total beforehand.
        total = rows.count() if show_progress else 0
        bar = ProgressBar(
            self.stderr,
            total,
            label="Dry run" if dry_run else "Requeueing",
            enabled=show_progress,
        )
        try:
            report = resend_events(
                rows,
                test_event_code=options["test_event_code"],
                dry_run=dry_run,
                now=now,
                chunk_size=options["chunk_size"],
                keep_refused=LISTED_REFUSALS if verbosity >= 2 else 0,
                on_progress=bar.update,
            )
        finally:
            bar.finish()
        if verbosity == 0:
            return
        for line in summary_lines(report, dry_run=dry_run):
            self.stdout.write(line)
        for event_id, reason in report.refused_rows:
            self.stdout.write(f"  not resent: {event_id} ({REFUSAL_REASONS[reason]})")
        if report.requeued and not dry_run:
            self.stdout.write(
                "A worker sends them now; the sweeper picks up any wake-up the broker missed."
            )
