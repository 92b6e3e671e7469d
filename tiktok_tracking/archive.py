"""Moving finished rows from the outbox to the archive, in bulk, after OUTBOX_RETENTION_HOURS."""

from datetime import timedelta

from django.db import connection, transaction

from tiktok_tracking import conf
from tiktok_tracking.models import ArchivedEvent, EventFields, TrackedEvent
from tiktok_tracking.sql import database_now

Status = TrackedEvent.Status
FINISHED = (Status.DELIVERED, Status.FAILED, Status.SUPPRESSED)
# Rows moved per transaction: the outbox is never locked for long, and memory stays flat.
CHUNK_SIZE = 2000
# The columns both tables share, copied as they are (the archive keeps the outbox row's id).
SHARED_FIELDS = tuple(
    field.attname for field in EventFields._meta.concrete_fields if not field.primary_key
)


def archive_finished(now=None, retention_hours=None, chunk_size=CHUNK_SIZE):
    """Move the finished rows untouched for ``retention_hours`` to the archive; how many moved.

    Each chunk is copied and deleted in one transaction; the rows are locked (PostgreSQL) or
    the database is (SQLite), so a resend racing the move either requeues a row before it is
    taken (and it stays) or finds it gone from the outbox. ``now`` is the database's time
    unless given: the rows' ``updated_at`` is written by that clock.
    """
    now = now or database_now()
    hours = conf.get("OUTBOX_RETENTION_HOURS") if retention_hours is None else retention_hours
    cutoff = now - timedelta(hours=hours)
    moved, after = 0, 0
    while True:
        count, after = _archive_chunk(cutoff, now, chunk_size, after)
        moved += count
        if count < chunk_size:
            return moved


def _archive_chunk(cutoff, now, chunk_size, after):
    """Move up to ``chunk_size`` rows with ids above ``after``; ``(moved, last id seen)``.

    Walking the ids upwards keeps each chunk's scan off the rows the chunks before it deleted
    (dead until vacuumed): restarting from the lowest id would read them all again each time.
    """
    finished = TrackedEvent.objects.filter(pk__gt=after, status__in=FINISHED, updated_at__lt=cutoff)
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            finished = finished.select_for_update(skip_locked=True)
        rows = list(finished.order_by("pk").values("pk", *SHARED_FIELDS)[:chunk_size])
        if not rows:
            return 0, after
        # A conflict is a twin recorded after its event was archived, and never sent (the
        # worker drops twins it claims; a suppressed or failed one is never claimed): the
        # archived event stands, the twin goes.
        ArchivedEvent.objects.bulk_create(
            [ArchivedEvent(id=row["pk"], archived_at=now, **_shared(row)) for row in rows],
            ignore_conflicts=True,
        )
        TrackedEvent.objects.filter(pk__in=[row["pk"] for row in rows]).delete()
    return len(rows), rows[-1]["pk"]


def _shared(row):
    return {name: row[name] for name in SHARED_FIELDS}
