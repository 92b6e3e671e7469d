"""Requeueing recorded events with their own event_id: the admin's resend and tiktok_resend."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import BooleanField, Case, Q, Value, When
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.publisher import enqueue_delivery
from tiktok_tracking.sql import DatabaseNow

Status = TrackedEvent.Status

# TikTok deduplicates repeats of an event_id only within 48 hours: a resend after that counts twice.
RESEND_WINDOW = timedelta(hours=48)

# Rows already in the queue: requeueing them would only race the worker that holds them.
IN_QUEUE = (Status.PENDING, Status.SENDING)

NO_PAYLOAD = "no_payload"
ALREADY_QUEUED = "already_queued"
TOO_OLD = "too_old"
REFUSAL_REASONS = {
    NO_PAYLOAD: _("no payload (invalid order data)"),
    ALREADY_QUEUED: _("already queued"),
    TOO_OLD: _("older than 48 h: TikTok would count it twice, not deduplicate it"),
}

# Rows read and requeued per statement: a resend of millions never holds them all in memory.
CHUNK_SIZE = 1000


@dataclass
class ResendReport:
    """What a resend did (or, in a dry run, would do)."""

    matched: int = 0
    requeued: int = 0
    # Reason key (see REFUSAL_REASONS) -> how many rows were refused for it.
    refused: Counter = field(default_factory=Counter)
    # ``(event_id, reason key)`` of refused rows, as many as the caller asked to keep.
    refused_rows: list = field(default_factory=list)

    @property
    def refused_total(self):
        return sum(self.refused.values())


def refusal_reason(status, event_time, has_payload, now):
    """Why a row must not be resent (a REFUSAL_REASONS key), or None if it may be (pure)."""
    if not has_payload:
        return NO_PAYLOAD
    if status in IN_QUEUE:
        return ALREADY_QUEUED
    if now - event_time > RESEND_WINDOW:
        return TOO_OLD
    return None


def resend_events(
    queryset,
    *,
    test_event_code="",
    dry_run=False,
    now=None,
    chunk_size=CHUNK_SIZE,
    keep_refused=None,
    on_progress=None,
):
    """Queue the rows of ``queryset`` to be sent again with their own event_ids.

    Rows without a payload, rows already queued and rows older than TikTok's 48 h dedup window
    are refused. Rows are read by primary key in chunks of ``chunk_size``; each chunk is
    requeued in one statement and delivery is woken once it commits. ``test_event_code`` is
    stored on the rows ("" clears an earlier one). ``keep_refused`` caps how many refused rows
    are listed in the report (None: all); ``on_progress(rows_done)`` is called after each chunk.
    """
    now = now or timezone.now()
    report = ResendReport()
    # The payload is only tested for emptiness, so the database answers that, not the rows.
    rows = (
        queryset.order_by("pk")
        .annotate(
            empty_payload=Case(
                When(Q(payload={}) | Q(payload=[]), then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            )
        )
        .values_list("pk", "event_id", "status", "event_time", "empty_payload")
    )
    last_pk = None
    while True:
        page = rows if last_pk is None else rows.filter(pk__gt=last_pk)
        chunk = list(page[:chunk_size])
        if not chunk:
            break
        last_pk = chunk[-1][0]
        sendable = []
        for pk, event_id, status, event_time, empty_payload in chunk:
            reason = refusal_reason(status, event_time, not empty_payload, now)
            if reason is None:
                sendable.append(pk)
            else:
                _refuse(report, event_id, reason, keep_refused)
        report.matched += len(chunk)
        if dry_run:
            report.requeued += len(sendable)
        elif sendable:
            requeued = _requeue(sendable, test_event_code)
            report.requeued += requeued
            # A row a worker claimed between the read and the update is in the queue already.
            report.refused[ALREADY_QUEUED] += len(sendable) - requeued
        if on_progress is not None:
            on_progress(report.matched)
    return report


def _refuse(report, event_id, reason, keep_refused):
    report.refused[reason] += 1
    if keep_refused is None or len(report.refused_rows) < keep_refused:
        report.refused_rows.append((event_id, reason))


def _requeue(ids, test_event_code):
    """Put the rows ``ids`` back in the queue, due now by the database's clock, which the
    workers claim by (whatever this process's clock says); returns how many were."""
    with transaction.atomic():
        count = (
            TrackedEvent.objects.filter(pk__in=ids)
            .exclude(status__in=IN_QUEUE)
            .update(
                status=Status.PENDING,
                next_attempt_at=DatabaseNow(),
                claim_token="",
                lease_expires_at=None,
                suppressed_reason="",
                test_event_code=test_event_code,
                updated_at=DatabaseNow(),
            )
        )
        if count:
            transaction.on_commit(enqueue_delivery, robust=True)
    return count
