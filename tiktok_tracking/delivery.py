"""Delivery: claim due outbox rows, send them in batches per pixel, record every outcome."""

import json
import logging
import os
import random
import re
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from itertools import groupby

from django.db import DatabaseError, connection, connections, router, transaction
from django.db.models import (
    BooleanField,
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    Func,
    JSONField,
    Q,
    TextField,
    Value,
)
from django.db.models.functions import Cast, Now
from django.views.decorators.debug import sensitive_variables

from tiktok_tracking import conf, sql
from tiktok_tracking.client import (
    CUT_MARKER,
    DELIVERED,
    MAX_MESSAGE_LENGTH,
    PERMANENT,
    TRANSIENT,
    Outcome,
    configured_client,
)
from tiktok_tracking.consent import SERVER, decide, policy_from_settings
from tiktok_tracking.events import compact_json, encode_request_body
from tiktok_tracking.models import (
    ArchivedEvent,
    CheckoutContext,
    ConsentRecord,
    DeliveryAnswer,
    DeliveryAttempt,
    TrackedEvent,
)
from tiktok_tracking.pixels import configured_pixels
from tiktok_tracking.redaction import redact
from tiktok_tracking.signals import events_delivered, events_failed
from tiktok_tracking.sql import DatabaseNow
from tiktok_tracking.standards import CODE_INVALID_PARAMETER

logger = logging.getLogger(__name__)

# TikTok names the rejected field by its path, e.g. "data.3.properties.value: ...".
FAILING_ITEM = re.compile(r"\bdata\.(\d+)\b")

# Requests one batch may add to its first to narrow a 40002 down to the events it blames.
MAX_NARROWING_REQUESTS = 2
# Batches whose requests can wait on the sender thread at once: the one on the wire and the
# next, claimed behind it (see deliver_due_events).
IN_FLIGHT_BATCHES = 2
# Kept free at the end of a lease to record the answer before the sweeper may take the rows.
RECORDING_MARGIN_SECONDS = 1.0
# A row whose lease ran out this many times with no outcome recorded is failed, not sent again:
# whatever kills or hangs its worker would only do it again.
MAX_LEASE_EXPIRIES = 5

LEASE_TOO_SHORT_MESSAGE = (
    "Not sent: the lease of these events (LEASE_SECONDS) would have run out before the "
    "request's TIMEOUT; they are sent again later."
)
NARROWING_STOPPED_MESSAGE = (
    f"Not narrowed further after {1 + MAX_NARROWING_REQUESTS} requests: TikTok refused these "
    "events in a batch for a parameter error it did not pin on them; each is sent again later, "
    "until it is delivered or named itself. TikTok's last answer"
)
# The smallest limit on a request body known to stand between a shop and TikTok: nginx's default
# client_max_body_size, 1 MiB (TikTok documents none). MAX_REQUEST_BYTES stays below it.
SMALLEST_KNOWN_BODY_LIMIT = 1024 * 1024
TOO_LARGE_TOGETHER_MESSAGE = (
    "Refused as too large in a request shared with other events, none of them to blame yet: "
    "each is sent again later, in a smaller request. The answer"
)
UNSTORABLE_ANSWER_MESSAGE = (
    "TikTok's answer could not be stored: this outcome was recorded without it (worker log)."
)

Status = TrackedEvent.Status


@dataclass
class DrainReport:
    """What one drain did, for the task's log line and the tests."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    suppressed: int = 0
    # Rows recorded again for an event already delivered and archived: deleted, not sent.
    duplicates: int = 0
    requests: int = 0
    more_due: bool = False
    # Seconds until the earliest retry scheduled by this drain, if any.
    next_retry_in: float | None = None
    outcomes: list = field(default_factory=list, repr=False)


@dataclass(slots=True)
class ClaimedRow:
    """What sending needs of one claimed outbox row: no model instance, no decoded payload."""

    pk: int
    pixel_id: str
    event: str
    event_id: str
    test_event_code: str
    visitor_id: str
    consent_status: str
    country: str
    attempts: int
    created_at: datetime
    claim_token: str
    payload_json: str
    # Whether the archive holds this event already; None until checked.
    archived: bool | None = None
    # The visitor's latest recorded consent status, "" for none; None until read.
    latest_consent: str | None = None

    @property
    def payload(self):
        return json.loads(self.payload_json)


# The outbox fields a ClaimedRow is read from.
CLAIMED_FIELDS = tuple(
    f.name for f in fields(ClaimedRow) if f.name not in ("archived", "latest_consent")
)


def retry_delay(attempts, base, cap, rand=random.random):
    """Seconds to wait before attempt ``attempts + 1``: exponential, capped, with equal jitter.

    Jitter keeps workers that failed together from retrying together.
    """
    delay = min(cap, base * 2 ** max(attempts - 1, 0))
    return delay * (0.5 + rand() / 2)


def failing_item_index(message):
    """The index of the event a 40002 message blames, or None if it names none."""
    match = FAILING_ITEM.search(message or "")
    return int(match.group(1)) if match else None


def worker_name():
    """This process as a claim names it: ``host:pid``, the host cut so that the pid always fits
    the ``claimed_by`` column."""
    pid = f":{os.getpid()}"
    room = TrackedEvent._meta.get_field("claimed_by").max_length - len(pid)
    return socket.gethostname()[:room] + pid


def claim_due_events(limit, *, lease_seconds=None):
    """Claim up to ``limit`` due rows for this worker and return them, oldest first.

    Due, and leased, by the database's clock: a worker whose own clock is off neither waits
    for rows that are due nor holds a lease that has already run out for the others.
    PostgreSQL locks the candidates with SKIP LOCKED so concurrent workers take disjoint sets,
    and claims and returns them in one statement (``sql.claim_due``); elsewhere (SQLite) the
    conditional UPDATE on ``status`` decides who wins, and the claim token tells each worker
    which rows are its own.
    """
    lease_seconds = float(lease_seconds or conf.get("LEASE_SECONDS"))
    token = uuid.uuid4().hex
    worker = worker_name()
    alias = router.db_for_write(TrackedEvent)
    if sql.on_postgresql(alias):
        rows = sql.claim_due(
            alias,
            CLAIMED_FIELDS,
            limit=limit,
            token=token,
            worker=worker,
            lease_seconds=lease_seconds,
        )
        return [ClaimedRow(*row) for row in rows]
    candidates = TrackedEvent.objects.due().order_by("next_attempt_at", "pk")
    skip_locked = connection.features.has_select_for_update_skip_locked
    # SQLite must not hold a read transaction here: upgrading it to a write would fail
    # with "database is locked" under contention instead of waiting.
    with transaction.atomic() if skip_locked else nullcontext():
        if skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        TrackedEvent.objects.filter(pk__in=ids, status=Status.PENDING).update(
            status=Status.SENDING,
            claim_token=token,
            lease_expires_at=DatabaseNow() + timedelta(seconds=lease_seconds),
            claimed_by=worker,
            claimed_at=DatabaseNow(),
            attempts=F("attempts") + 1,
            updated_at=DatabaseNow(),
        )
    # By id as well: the outbox keeps no index on the token.
    return load_claimed(TrackedEvent.objects.filter(pk__in=ids, claim_token=token))


def load_claimed(rows):
    """The rows of the queryset ``rows`` as ClaimedRows, in the order they fell due."""
    values = (
        rows.order_by("next_attempt_at", "pk")
        # The payload as the JSON text it is stored as: it goes into the request body as is.
        .annotate(payload_json=Cast("payload", TextField()))
        .values_list(*CLAIMED_FIELDS)
    )
    return [ClaimedRow(*row) for row in values]


def deliver_due_events(*, client=None, batch_size=None, max_seconds=None):
    """Send due events until none are left or ``max_seconds`` have passed.

    Pipelined: while one batch's request is on the wire (a thread does nothing but the HTTP),
    this thread records the previous batch's answer and claims the next batch, so the
    database work and TikTok's answer time overlap instead of adding up.
    """
    own_client = client is None
    client = client or configured_client()
    batch_size = int(batch_size or conf.get("BATCH_SIZE"))
    max_seconds = conf.get("DRAIN_SECONDS") if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    lease_seconds = float(conf.get("LEASE_SECONDS"))
    report = DrainReport()
    in_flight = []
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiktok-send") as sender:
            sender_client = QueuedSender(client, sender)
            claiming, out_of_time = True, False  # the first claim happens whatever the time
            while claiming or in_flight:
                # Read before the claim, so the rows' lease can only end later than this says.
                send_by = time.monotonic() + lease_seconds - RECORDING_MARGIN_SECONDS
                rows = claim_due_events(batch_size) if claiming else []
                report.claimed += len(rows)
                next_flight = start_sending(rows, sender_client, report, send_by)
                finish_sending(in_flight, sender_client, report)
                in_flight = next_flight
                if claiming and not rows:
                    claiming = False
                elif claiming and time.monotonic() >= deadline:
                    claiming, out_of_time = False, True
            if out_of_time:
                report.more_due = TrackedEvent.objects.due().exists()
    finally:
        if own_client:
            client.close()
    return report


class QueuedSender:
    """The client's requests, queued on one sending thread (an executor): started now, answered
    later.

    A request is started only if it ends, at its TIMEOUT, before ``send_by`` (a
    ``time.monotonic()`` value short of its rows' lease): queued behind other requests, it
    may find its time gone, and is then not sent at all rather than sent twice.
    """

    def __init__(self, client, executor):
        self.client = client
        self.executor = executor

    @sensitive_variables("access_token")
    def start(self, data, event_count, access_token=None, *, send_by=None):
        return self.executor.submit(self._send_by, send_by, data, event_count, access_token)

    @sensitive_variables("access_token")
    def send_encoded(self, data, event_count, access_token=None, *, send_by=None):
        return self.start(data, event_count, access_token, send_by=send_by).result()

    @sensitive_variables("access_token")
    def _send_by(self, send_by, data, event_count, access_token):
        # Judged on this thread when the request would start, not when it was queued.
        if send_by is not None and time.monotonic() + self.client.timeout > send_by:
            return Outcome(TRANSIENT, message=LEASE_TOO_SHORT_MESSAGE, event_count=event_count)
        return self.client.send_encoded(data, event_count, access_token)


def start_sending(rows, sender, report, send_by=None):
    """Put each request of the claimed rows on the wire;
    ``[(pixel, code, rows, future, send_by)]``."""
    in_flight = []
    rows = drop_archived_twins(rows, report)
    for pixel, test_event_code, group in sendable_groups(rows, report):
        if pixel is None:
            # Rows of a pixel taken out of the settings: failed, and resendable once it is back.
            record_outcome(group, unconfigured_pixel(group[0].pixel_id, len(group)), report)
            continue
        for part in capped_requests(pixel, test_event_code, group, report):
            future = sender.start(*_request(pixel, test_event_code, part), send_by=send_by)
            in_flight.append((pixel, test_event_code, part, future, send_by))
    return in_flight


def unconfigured_pixel(pixel_id, event_count):
    message = f"Pixel {pixel_id} is not in the settings (PIXEL_ID or PIXELS): nothing was sent."
    return Outcome(PERMANENT, message=message, event_count=event_count)


def finish_sending(in_flight, sender, report):
    """Record the answers of requests started by :func:`start_sending`."""
    for pixel, test_event_code, group, future, send_by in in_flight:
        send_group(
            sender, pixel, test_event_code, group, report, outcome=future.result(), send_by=send_by
        )


def drop_archived_twins(rows, report):
    """The claimed rows but those whose event is already in the archive.

    The claim on PostgreSQL has checked each row (``ClaimedRow.archived``); elsewhere it costs
    one query a batch.

    Such a row was recorded again after the first one finished and moved to the archive (a
    webhook retried days later, a cron run twice): the outbox's unique constraint could no
    longer see it. Checked here rather than at checkout, where it would cost every payment a
    query; the twin is deleted, the archived event stands, and TikTok counts it once.
    """
    unchecked = [row for row in rows if row.archived is None]
    archived = (
        set(
            ArchivedEvent.objects.filter(
                event_id__in={row.event_id for row in unchecked}
            ).values_list("pixel_id", "event", "event_id")
        )
        if unchecked
        else set()
    )
    twins = [
        row for row in rows if row.archived or (row.pixel_id, row.event, row.event_id) in archived
    ]
    if not twins:
        return rows
    TrackedEvent.objects.filter(
        pk__in=[row.pk for row in twins], claim_token__in={row.claim_token for row in twins}
    ).delete()
    report.duplicates += len(twins)
    logger.info(
        "TikTok delivery: %d event(s) recorded again after being archived, not sent twice",
        len(twins),
    )
    dropped = {row.pk for row in twins}
    return [row for row in rows if row.pk not in dropped]


def sendable_groups(rows, report):
    """Re-check consent (suppressing whom it now stops); the rest grouped per request:
    ``[(pixel, test_event_code, rows)]``, pixel None for rows of a pixel no setting names."""
    sendable = []
    for row, decision in consent_at_send_time(rows):
        if not decision.allowed:
            mark_suppressed(row, decision.reason)
            report.suppressed += 1
            continue
        if decision.limited_data_use:
            payload = row.payload
            if not payload.get("limited_data_use"):
                # A US visitor who opted out after paying: sent, but with processing limited.
                payload["limited_data_use"] = True
                row.payload_json = compact_json(payload)
                TrackedEvent.objects.filter(pk=row.pk).update(payload=payload)
        sendable.append(row)
    pixels = {pixel.pixel_id: pixel for pixel in configured_pixels()}

    def request_key(row):
        pixel = pixels.get(row.pixel_id)
        configured_code = pixel.test_event_code if pixel else None
        return (row.pixel_id, row.test_event_code or configured_code or "")

    return [
        (pixels.get(pixel_id), test_code or None, list(group))
        for (pixel_id, test_code), group in groupby(sorted(sendable, key=request_key), request_key)
    ]


def consent_at_send_time(rows):
    """Pair each row with the consent decision that holds now (one query for the batch).

    The visitor's latest recorded choice wins over the snapshot taken at checkout, so a
    withdrawal between payment and delivery stops the event. The claim on PostgreSQL has read
    it (``ClaimedRow.latest_consent``); elsewhere it costs one query a batch.
    """
    unread = {row.visitor_id for row in rows if row.visitor_id and row.latest_consent is None}
    latest = ConsentRecord.latest_statuses(unread) if unread else {}
    policy = policy_from_settings()
    for row in rows:
        recorded = row.consent_status or None
        read = latest.get(row.visitor_id) if row.latest_consent is None else row.latest_consent
        status = read or recorded
        decision = decide(policy, lane=SERVER, country=row.country or None, status=status)
        if not decision.allowed and status != recorded:
            decision = replace(
                decision, reason=f"consent changed before delivery: {decision.reason}"
            )
        yield row, decision


def _request(pixel, test_event_code, rows):
    """``(body, event_count, access_token)`` of one request carrying ``rows`` to ``pixel``."""
    body = _encoded_body(pixel, test_event_code, [row.payload_json for row in rows])
    return body, len(rows), pixel.access_token


def _encoded_body(pixel, test_event_code, items):
    return encode_request_body(
        pixel.pixel_id,
        items,
        test_event_code=test_event_code,
        partner_name=conf.get("PARTNER_NAME") or None,
    )


def capped_requests(pixel, test_event_code, rows, report):
    """``rows`` cut, in order, into the requests that keep each body within MAX_REQUEST_BYTES;
    an event too large to go even alone is failed here, with its size and the setting named.

    Measured, not encoded: a batch under the cap (the usual case) is encoded once, whole, by
    :func:`_request`.
    """
    cap = int(conf.get("MAX_REQUEST_BYTES"))
    envelope, sizes = request_sizes(pixel, test_event_code, rows)
    if request_bytes(envelope, sizes) <= cap:
        return [rows]
    sendable, sendable_sizes = [], []
    for row, size in zip(rows, sizes, strict=True):
        if envelope + size > cap:
            record_outcome([row], too_large_to_send(envelope + size, cap), report)
        else:
            sendable.append(row)
            sendable_sizes.append(size)
    return [sendable[start:stop] for start, stop in byte_capped_runs(sendable_sizes, cap, envelope)]


def too_large_to_send(size, cap):
    message = (
        f"Not sent: this event alone makes a request of {size:,} bytes, above MAX_REQUEST_BYTES "
        f"({cap:,}). Where TikTok and every proxy on the way accept larger requests, raise "
        "MAX_REQUEST_BYTES and resend it."
    )
    return Outcome(PERMANENT, message=message, event_count=1)


def request_sizes(pixel, test_event_code, rows):
    """``(envelope, sizes)``: the bytes of a body to ``pixel`` with no event, and of each row's
    item in it, so that a body of them is :func:`request_bytes` long."""
    envelope = len(_encoded_body(pixel, test_event_code, []))
    return envelope, [encoded_size(row.payload_json) for row in rows]


def encoded_size(text):
    # Most items are ASCII (hashes, ids, numbers), whose length is their size in UTF-8.
    return len(text) if text.isascii() else len(text.encode())


def request_bytes(envelope, sizes):
    """The length of a body of items of ``sizes`` bytes: the envelope, the items, a comma
    between each two."""
    return envelope + sum(sizes) + max(len(sizes) - 1, 0)


def byte_capped_runs(sizes, cap, envelope):
    """``[(start, stop)]``: consecutive runs of the items, in order, each run's body (of
    :func:`request_bytes`) within ``cap``; an item over it even alone makes a run of its own."""
    runs = []
    start, used = 0, envelope
    for index, size in enumerate(sizes):
        if index == start:
            used += size
        elif used + 1 + size > cap:
            runs.append((start, index))
            start, used = index, envelope + size
        else:
            used += 1 + size
    if sizes:
        runs.append((start, len(sizes)))
    return runs


def halve_by_bytes(sizes):
    """Where to cut items of ``sizes`` bytes into two runs of about half the bytes each, each
    run holding at least one item (at least two items are needed)."""
    half, running = sum(sizes) / 2, 0
    for index, size in enumerate(sizes):
        running += size
        if running >= half:
            return min(max(index + 1, 1), len(sizes) - 1)
    return len(sizes) - 1


def send_group(sender, pixel, test_event_code, rows, report, *, outcome=None, send_by=None):
    """Send one request (unless its ``outcome`` is in) and record it.

    A parameter error (40002) on a batch is narrowed down to the events it blames, so that one
    bad event does not sink the 999 good ones beside it, with at most MAX_NARROWING_REQUESTS
    more requests: the event TikTok names is failed and the rest sent again; an answer that
    names none splits the batch once. Events still refused beside another are never failed for
    it: they go back to the queue like a transient error (backoff, retry window), so a batch
    whose events all share one bad field costs three requests a round, not one per event, and
    a good event among bad ones is delivered in a later round.

    A request refused for its size (HTTP 413, whatever its body) is halved instead, until each
    event is answered on its own merits (:func:`_narrow_by_size`).
    """

    def answered(outcome):
        report.requests += 1
        report.outcomes.append(outcome)
        return outcome

    def send(part):
        request = _request(pixel, test_event_code, part)
        return answered(sender.send_encoded(*request, send_by=send_by))

    outcome = send(rows) if outcome is None else answered(outcome)
    if outcome.too_large:
        _narrow_by_size(pixel, test_event_code, rows, outcome, send, report)
        return
    spare = MAX_NARROWING_REQUESTS
    while _refused_for_a_parameter(outcome) and len(rows) > 1 and spare:
        index = failing_item_index(outcome.message)
        if index is None or index >= len(rows):
            if spare < 2:
                break
            half = len(rows) // 2
            for part in (rows[:half], rows[half:]):
                record_narrowed(part, send(part), report)
            return
        rows = _fail_the_blamed(rows, index, outcome, report)
        outcome = send(rows)
        spare -= 1
    record_narrowed(rows, outcome, report)


def _narrow_by_size(pixel, test_event_code, rows, outcome, send, report):
    """Halve a request refused as too large (HTTP 413) by bytes, and each half again while it
    is refused, so that only an event refused alone fails; every other is answered on its own
    merits.

    It ends: each request carries fewer events than the one it was cut from, so n events cost
    at most 2n - 1 requests, each started only while the rows' lease covers it (QueuedSender:
    those it cannot are retried later, inside the retry window, like any transient error).
    """
    envelope, sizes = request_sizes(pixel, test_event_code, rows)
    logger.warning(
        "TikTok delivery: a request of %d bytes (%d event(s)) was refused as too large (HTTP %s, "
        "code %s); each event is sent in smaller requests until it is answered or refused alone. "
        "Set MAX_REQUEST_BYTES below the limit that refused it.",
        request_bytes(envelope, sizes),
        len(rows),
        outcome.http_status,
        outcome.code,
    )
    # Depth first, the first half first: the events keep their order on the wire.
    pending = [(rows, sizes, outcome)]
    while pending:
        part, part_sizes, answer = pending.pop()
        if answer is None:
            answer = send(part)
        if answer.too_large and len(part) > 1:
            cut = halve_by_bytes(part_sizes)
            pending.append((part[cut:], part_sizes[cut:], None))
            pending.append((part[:cut], part_sizes[:cut], None))
            continue
        if answer.too_large:
            size = request_bytes(envelope, part_sizes)
            answer = _reworded(
                answer,
                f"Refused as too large even alone, in a request of {size:,} bytes carrying "
                f"only this event: {answer.message}",
            )
        record_narrowed(part, answer, report)


def record_narrowed(rows, outcome, report):
    """Record the last answer to a narrowed request: a parameter error on several events fails
    the one it names, and sends the others again later; so does a refusal of their request as
    too large, which blames none of them."""
    if _refused_for_a_parameter(outcome) and len(rows) > 1:
        index = failing_item_index(outcome.message)
        if index is not None and index < len(rows):
            rows = _fail_the_blamed(rows, index, outcome, report)
        outcome = replace(
            outcome, kind=TRANSIENT, message=f"{NARROWING_STOPPED_MESSAGE}: {outcome.message}"
        )
    elif outcome.too_large and len(rows) > 1:
        outcome = _reworded(outcome, f"{TOO_LARGE_TOGETHER_MESSAGE}: {outcome.message}")
        outcome = replace(outcome, kind=TRANSIENT)
    record_outcome(rows, outcome, report)


def _reworded(outcome, message):
    """``outcome`` with ``message``, bounded as every answer's message is."""
    return replace(outcome, message=redact(message, limit=MAX_MESSAGE_LENGTH, marker=CUT_MARKER))


def _fail_the_blamed(rows, index, outcome, report):
    """Record the event at ``index`` as refused with ``outcome``; the other rows."""
    record_outcome([rows[index]], outcome, report)
    return rows[:index] + rows[index + 1 :]


def _refused_for_a_parameter(outcome):
    return outcome.kind == PERMANENT and outcome.code == CODE_INVALID_PARAMETER


def record_outcome(rows, outcome, report):
    """Write the attempt log and move each row to delivered, failed or its next attempt, every
    time in it taken from the database's clock.

    Should the answer still not fit the database, the outcome is recorded without TikTok's
    fields: rows left ``sending`` would only be sent again and again.
    """
    try:
        settled = _write_outcome(rows, outcome)
    except DatabaseError as exc:
        # Only the error's type: its text may quote the value that did not fit.
        logger.error(
            "TikTok's answer for %d event(s) could not be stored (%s); recorded without it",
            len(rows),
            type(exc).__name__,
        )
        bare = replace(
            outcome, http_status=None, code=None, message=UNSTORABLE_ANSWER_MESSAGE, request_id=""
        )
        settled = _write_outcome(rows, bare)
    settled.announce(report)


@dataclass
class SettledRows:
    """What recording one outcome did, reported and signalled once it is written."""

    delivered: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    exhausted: list = field(default_factory=list)
    retrying: int = 0
    next_retry_in: float | None = None
    error: str = ""

    def announce(self, report):
        report.delivered += len(self.delivered)
        report.failed += len(self.rejected) + len(self.exhausted)
        report.retrying += self.retrying
        if self.next_retry_in is not None and (
            report.next_retry_in is None or self.next_retry_in < report.next_retry_in
        ):
            report.next_retry_in = self.next_retry_in
        if self.delivered:
            events_delivered.send(sender=TrackedEvent, tracked_event_ids=self.delivered)
        if self.rejected:
            logger.warning("TikTok rejected %d event(s): %s", len(self.rejected), self.error)
            events_failed.send(sender=TrackedEvent, tracked_event_ids=self.rejected, permanent=True)
        if self.exhausted:
            events_failed.send(
                sender=TrackedEvent, tracked_event_ids=self.exhausted, permanent=False
            )


def _write_outcome(rows, outcome):
    """Log the answer and settle the rows, all or nothing; what was settled."""
    logged = {
        "attempted_at": DatabaseNow(),
        "outcome": outcome.kind,
        "batch_size": outcome.event_count,
        "http_status": outcome.http_status,
        "code": outcome.code,
        "message": outcome.message,
        "request_id": outcome.request_id,
        "duration_ms": outcome.duration_ms,
    }
    answer = {
        "last_http_status": outcome.http_status,
        "last_code": outcome.code,
        "last_message": outcome.message,
        "last_request_id": outcome.request_id,
        "lease_expires_at": None,
        "claim_token": "",
        "updated_at": DatabaseNow(),
    }
    settled = SettledRows(error=_error_text(outcome))
    if outcome.kind == DELIVERED:
        _settle_rows(
            rows,
            logged,
            status=Status.DELIVERED,
            delivered_at=DatabaseNow(),
            last_error="",
            **answer,
        )
        settled.delivered = [row.pk for row in rows]
    elif outcome.kind == PERMANENT:
        _settle_rows(rows, logged, status=Status.FAILED, last_error=settled.error, **answer)
        settled.rejected = [row.pk for row in rows]
    else:
        with transaction.atomic():
            log_attempts([row.pk for row in rows], **logged)
            schedule_retries(rows, outcome, answer, settled)
    return settled


def _settle_rows(rows, logged, **values):
    """Log the answer ``logged`` for ``rows`` and set ``values`` on each row still claimed.

    On PostgreSQL one statement does all three (``sql.settle``), atomic on its own: a batch
    delivered or refused costs one round trip to record, not five. Inside a caller's
    transaction it gets a savepoint, so that an answer that does not fit leaves that
    transaction usable for the bare retry.
    """
    alias = router.db_for_write(TrackedEvent)
    if not sql.on_postgresql(alias):
        with transaction.atomic(using=alias):
            log_attempts([row.pk for row in rows], **logged)
            _update_claimed(rows, **values)
        return
    in_callers_transaction = connections[alias].in_atomic_block
    with transaction.atomic(using=alias) if in_callers_transaction else nullcontext():
        sql.settle(
            alias,
            logged,
            [row.pk for row in rows],
            {row.claim_token for row in rows},
            values,
        )


def schedule_retries(rows, outcome, answer, settled):
    """Back off each row by its attempt count, due again by the database's clock; rows past the
    retry window, or past the attempts an answer the app cannot place allows, become failed."""
    base = float(conf.get("RETRY_BASE_DELAY"))
    cap = float(conf.get("RETRY_MAX_DELAY"))
    window = timedelta(hours=float(conf.get("MAX_RETRY_HOURS")))
    error = settled.error
    if outcome.max_attempts:
        given_up = [row for row in rows if row.attempts >= outcome.max_attempts]
        if given_up:
            _update_claimed(
                given_up,
                status=Status.FAILED,
                last_error=(
                    f"Given up after {outcome.max_attempts} attempts on an answer the app "
                    f"cannot place; the last one: {error}"
                ),
                **answer,
            )
            settled.exhausted += [row.pk for row in given_up]
            rows = [row for row in rows if row.attempts < outcome.max_attempts]
    unsettled = []
    for attempts, group in groupby(sorted(rows, key=_attempts), _attempts):
        group = list(group)
        delay = timedelta(seconds=retry_delay(attempts, base, cap))
        # Only a row whose next attempt still falls inside its retry window waits for it.
        waiting = (
            _claimed(group)
            .filter(created_at__gte=DatabaseNow() + (delay - window))
            .update(
                status=Status.PENDING,
                next_attempt_at=DatabaseNow() + delay,
                last_error=error,
                **answer,
            )
        )
        if waiting:
            settled.retrying += waiting
            seconds = delay.total_seconds()
            if settled.next_retry_in is None or seconds < settled.next_retry_in:
                settled.next_retry_in = seconds
        if waiting < len(group):
            unsettled += group
    # Those of them still held are the rows whose window had closed; asked only when some are.
    still_held = set(_claimed(unsettled).values_list("pk", flat=True)) if unsettled else ()
    exhausted = [row for row in unsettled if row.pk in still_held]
    if exhausted:
        _update_claimed(
            exhausted,
            status=Status.FAILED,
            last_error=(
                f"Retry window of {conf.get('MAX_RETRY_HOURS')} h exhausted; last error: {error}"
            ),
            **answer,
        )
        settled.exhausted += [row.pk for row in exhausted]


def log_attempts(tracked_event_ids, **answer):
    """Log one answer: a DeliveryAnswer row, and one narrow DeliveryAttempt per event."""
    # The answer is written once, not once per event: a request of 1,000 events adds one
    # wide row and 1,000 rows of two ids (bench.delivery's breakdown times the INSERTs). On
    # PostgreSQL the ids go as one array (sql.py has the figures).
    logged = DeliveryAnswer.objects.create(**answer)
    alias = router.db_for_write(DeliveryAttempt)
    if sql.on_postgresql(alias):
        sql.log_attempts(alias, logged.pk, tracked_event_ids)
    else:
        DeliveryAttempt.objects.bulk_create(
            [DeliveryAttempt(tracked_event_id=pk, answer=logged) for pk in tracked_event_ids]
        )


def mark_suppressed(row, reason):
    _update_claimed(
        [row],
        status=Status.SUPPRESSED,
        suppressed_reason=reason[:255],
        lease_expires_at=None,
        claim_token="",
    )


def _attempts(row):
    return row.attempts


def _update_claimed(rows, **values):
    return _claimed(rows).update(**values)


def _claimed(rows):
    """The outbox rows of ``rows`` still held by the claims that returned them."""
    # The claim token guards against a late outcome overwriting a row that the sweeper has
    # since handed to another worker.
    tokens = {row.claim_token for row in rows}
    return TrackedEvent.objects.filter(pk__in=[row.pk for row in rows], claim_token__in=tokens)


def _error_text(outcome):
    parts = []
    if outcome.http_status is not None:
        parts.append(f"HTTP {outcome.http_status}")
    if outcome.code is not None:
        parts.append(f"code {outcome.code}")
    if outcome.message:
        parts.append(outcome.message)
    return ", ".join(parts) or outcome.kind


def expire_leases():
    """Return rows whose worker died mid-send to the queue; returns how many.

    Expired, and due again, by the database's clock: a sweeper whose own clock runs ahead
    takes no lease that is still live. Not every time: a row past its retry window, or whose
    lease has run out MAX_LEASE_EXPIRIES times with no outcome recorded, is failed instead,
    with the reason.
    """
    hours = conf.get("MAX_RETRY_HOURS")
    window = timedelta(hours=float(hours))
    expired = TrackedEvent.objects.expired_leases()
    too_late, looping = [], []
    # Each claim counts an attempt and each recorded outcome logs one: the difference is how
    # many claims ended with no outcome, this one included.
    counts = expired.annotate(
        recorded=Count("delivery_attempts"),
        too_late=ExpressionWrapper(
            Q(created_at__lte=DatabaseNow() - window), output_field=BooleanField()
        ),
    ).values_list("pk", "attempts", "recorded", "too_late")
    for pk, attempts, recorded, past_window in counts:
        if past_window:
            too_late.append(pk)
        elif attempts - recorded >= MAX_LEASE_EXPIRIES:
            looping.append(pk)
    _fail_expired(
        too_late,
        f"Retry window of {hours} h exhausted while a worker held the event; its lease expired "
        "with no outcome recorded, so it is not sent again.",
    )
    _fail_expired(
        looping,
        f"Lease expired {MAX_LEASE_EXPIRIES} times with no outcome recorded (a worker dies or "
        "hangs on these events, see its log): not sent again.",
    )
    return TrackedEvent.objects.expired_leases().update(
        status=Status.PENDING,
        claim_token="",
        lease_expires_at=None,
        next_attempt_at=DatabaseNow(),
        last_error="Lease expired before an outcome was recorded; sending again.",
        updated_at=DatabaseNow(),
    )


def _fail_expired(ids, reason):
    if not ids:
        return
    # Still expired: an outcome recorded meanwhile stands.
    stale = TrackedEvent.objects.expired_leases().filter(pk__in=ids)
    failed = list(stale.values_list("pk", flat=True))
    stale.update(
        status=Status.FAILED,
        claim_token="",
        lease_expires_at=None,
        last_error=reason,
        updated_at=DatabaseNow(),
    )
    if failed:
        logger.warning("TikTok sweeper: %d event(s) failed instead: %s", len(failed), reason)
        events_failed.send(sender=TrackedEvent, tracked_event_ids=failed, permanent=False)


# Rows purged per UPDATE: each statement stays short, on an archive of millions as well.
PURGE_CHUNK = 2000


def purge_personal_data(now=None, retention_days=None):
    """Blank raw ip, user agent and page addresses once delivery no longer needs them, in the
    outbox, the archive and the checkout contexts; returns rows touched.

    The archive is purged by the same rule as the outbox (finished rows last changed more than
    ``RETENTION_DAYS`` ago): rows move there at ``OUTBOX_RETENTION_HOURS``, usually before their
    purge is due, and keep their raw values only until it is.
    """
    days = conf.get("RETENTION_DAYS") if retention_days is None else retention_days
    # The database's clock, as for claims and leases (a test names another moment): hosts
    # whose clocks differ purge the same rows.
    moment = Now() if now is None else Value(now, output_field=DateTimeField())
    cutoff = ExpressionWrapper(moment - timedelta(days=days), output_field=DateTimeField())
    purged = sum(_purge_finished(model, cutoff, moment) for model in (TrackedEvent, ArchivedEvent))
    purged += CheckoutContext.objects.filter(
        captured_at__lt=cutoff, personal_data_purged_at__isnull=True
    ).update(ip=None, user_agent="", page_url="", referrer="", personal_data_purged_at=moment)
    return purged


def _purge_finished(model, cutoff, now):
    """Purge the finished rows of ``model`` (the outbox or the archive) last changed before
    ``cutoff``, PURGE_CHUNK at a time; how many.

    One read walks the rows' ids; each chunk is then purged by one UPDATE that the database
    computes (:class:`WithoutRawPersonalData`), so a backlog (an archive filled by a release
    that did not purge it) costs statements, not a round trip of every payload.
    """
    finished = (Status.DELIVERED, Status.FAILED, Status.SUPPRESSED)
    stale = model.objects.filter(
        status__in=finished, updated_at__lt=cutoff, personal_data_purged_at__isnull=True
    )
    in_database = connections[router.db_for_write(model)].vendor in WithoutRawPersonalData.VENDORS
    purged, ids = 0, []
    for pk in stale.values_list("pk", flat=True).iterator(chunk_size=PURGE_CHUNK):
        ids.append(pk)
        if len(ids) >= PURGE_CHUNK:
            purged += _purge_rows(model, ids, now, in_database)
            ids = []
    return purged + _purge_rows(model, ids, now, in_database)


def _purge_rows(model, ids, now, in_database):
    if not ids:
        return 0
    # Still unpurged: a row purged meanwhile (another beat's run) is not rewritten.
    rows = model.objects.filter(pk__in=ids, personal_data_purged_at__isnull=True)
    if in_database:
        return rows.update(payload=WithoutRawPersonalData("payload"), personal_data_purged_at=now)
    batch = list(rows.only("pk", "payload"))
    for row in batch:
        row.payload = without_raw_personal_data(row.payload)
        row.personal_data_purged_at = now
    if batch:
        model.objects.bulk_update(batch, ["payload", "personal_data_purged_at"])
    return len(batch)


class WithoutRawPersonalData(Func):
    """:func:`without_raw_personal_data` of a payload column, computed by the database."""

    VENDORS = ("postgresql", "sqlite")
    arity = 1
    output_field = JSONField()

    def as_postgresql(self, compiler, connection, **extra_context):
        payload, params = compiler.compile(self.source_expressions[0])
        user = f"({payload} -> 'user')"
        sql = (
            f"CASE WHEN jsonb_typeof({payload}) <> 'object' THEN {payload} "
            f"WHEN jsonb_typeof({user}) = 'object' THEN jsonb_set({payload} - 'page', '{{user}}', "
            f"{user} - 'ip' - 'user_agent') "
            f"ELSE {payload} - 'page' END"
        )
        return sql, tuple(params) * sql.count(payload)

    def as_sqlite(self, compiler, connection, **extra_context):
        payload, params = compiler.compile(self.source_expressions[0])
        return f"json_remove({payload}, '$.user.ip', '$.user.user_agent', '$.page')", params


def without_raw_personal_data(payload):
    """An Events API item without what is kept raw only for delivery: ip, user agent, page."""
    if not isinstance(payload, dict) or not payload:
        return payload
    purged = dict(payload)
    user = purged.get("user")
    if isinstance(user, dict):
        purged["user"] = {key: value for key, value in user.items() if key not in RAW_USER_KEYS}
    # The page's address (and its referrer) can say who the shopper is even when stripped.
    purged.pop("page", None)
    return purged


# The user keys TikTok takes raw, kept only until the purge.
RAW_USER_KEYS = ("ip", "user_agent")
