"""The hand-written statements, each kept for the time a benchmark shows it saves.

Everything else goes through the ORM's query builder. Two run on every payment, two on every
batch the worker sends (and a third on a batch sent again later), and composing them through
it costs more than running them. Each is written once, with the model's own quoted names,
through the ORM's public ``RawSQL``, ``raw()`` or a cursor; the worker's serve PostgreSQL, and
other databases take the ORM's way.
Measured on this project's 2-core machine (``bench.delivery``'s breakdown shows each
statement's share of a batch):

- the receipt subquery of the outbox INSERT: 305 µs per payment as ``RawSQL`` against 623 µs
  as a ``Subquery`` of a QuerySet (the INSERT alone: 250 µs; ``python -m bench.checkout
  --profile``);
- the read of the order's checkout context: 86 µs per payment with ``raw()`` against 280-314
  µs with ``values()``/``values_list()``;
- the claim of a batch on PostgreSQL, one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
  SKIP LOCKED) RETURNING`` that also reads whether the archive holds each event: 25.4 ms per
  1,000 rows against 39.3 ms through the ORM, which needs four statements (select the ids,
  update them, read the rows back, look them up in the archive), since its ``update()``
  returns no rows, and sends the 1,000 ids three times;
- the attempt log of a batch on PostgreSQL, one ``INSERT ... SELECT unnest(%s)`` of the ids
  as one array: 6.2 ms per 1,000 events against 15.7 ms with ``bulk_create`` (1,000 model
  instances, 2,000 parameters).

On PostgreSQL a batch costs the worker two round trips to the database: the claim, which also
reads each visitor's latest consent, and the settling of a batch delivered or refused, whose
answer, attempt log and rows' update go as one statement (data-modifying CTEs), atomic without
a transaction of its own. For a worker 20 ms from the database that is 40 ms a batch, where
the ORM's seven (the consent read, BEGIN, three statements, COMMIT) took 140 ms
(``bench.distance``, ``tests/test_round_trips.py``). Both read every time they compare or
write from the database's clock (``DATABASE_NOW``), none from the worker's.
"""

from datetime import timezone as datetime_timezone
from functools import lru_cache

from django.conf import settings
from django.db import connections, router
from django.db.models import DateTimeField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.dateparse import parse_datetime

# What identifies an event, in the outbox, the archive and the browser receipts.
RECEIPT_KEY = ("pixel_id", "event", "event_id")
# The database's clock, which the claim and the settling read for every time they compare or
# write (docs/deployment.md, "One clock"): the time of the statement, as Django's Now() renders
# it here. Not now(), the start of the transaction, which stands still through a long one; not
# clock_timestamp(), which is volatile: read anew for each row, and never matched against the
# due rows' index.
DATABASE_NOW = "statement_timestamp()"
# SQLite's clock, which Django 4.2's Now() reads to the second (CURRENT_TIMESTAMP) and later
# releases to the millisecond: read to the millisecond on every release, and taken at the last
# microsecond of that millisecond, since the rows' times are stored to the microsecond. A row
# recorded in the millisecond a claim reads is then due to that claim, not left to the next.
# 'localtime' where times are stored as local time (USE_TZ = False).
SQLITE_NOW = "STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW'{modifier}) || '999'"


class DatabaseNow(Now):
    """The database's time when the statement runs, as precise as the rows' stored times on
    every supported Django: what every due time, lease and sweep cutoff is compared with, and
    written from (docs/deployment.md, "One clock")."""

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template=DATABASE_NOW, **extra_context)

    def as_sqlite(self, compiler, connection, **extra_context):
        # Each % doubled twice: as_sql formats the template, then the cursor its parameters.
        template = _sqlite_now().replace("%", "%%%%")
        return self.as_sql(compiler, connection, template=template, **extra_context)


def _sqlite_now():
    return SQLITE_NOW.format(modifier="" if settings.USE_TZ else ", 'localtime'")


def database_now(alias=None):
    """The database's time now, read once: the one cutoff a sweep compares many rows with, by
    the same clock as the claims and leases."""
    from tiktok_tracking.models import TrackedEvent

    connection = connections[alias or router.db_for_write(TrackedEvent)]
    clocks = {"postgresql": DATABASE_NOW, "sqlite": _sqlite_now()}
    sql = f"SELECT {clocks.get(connection.vendor, 'CURRENT_TIMESTAMP')}"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = parse_datetime(value)
    if settings.USE_TZ and timezone.is_naive(value):
        value = timezone.make_aware(value, datetime_timezone.utc)
    return value


def _column(quote, model, name):
    """``model``'s column ``name`` (``"pk"`` for its primary key), quoted by ``quote``."""
    meta = model._meta
    return quote((meta.pk if name == "pk" else meta.get_field(name)).column)


@lru_cache(maxsize=8)
def _receipt_sql(alias):
    from tiktok_tracking.models import BrowserReceipt

    quote = connections[alias].ops.quote_name
    meta = BrowserReceipt._meta
    where = " AND ".join(f"{quote(meta.get_field(name).column)} = %s" for name in RECEIPT_KEY)
    # Only the model's own quoted names are formatted in; the values are parameters.
    return (
        f"(SELECT {quote(meta.get_field('received_at').column)} "  # noqa: S608
        f"FROM {quote(meta.db_table)} WHERE {where} LIMIT 1)"
    )


def receipt_time(pixel_id, event, event_id):
    """The time the browser's receipt of this event arrived, as an expression the INSERT reads
    (NULL when none has)."""
    from tiktok_tracking.models import TrackedEvent

    alias = router.db_for_write(TrackedEvent)
    # The SQL holds only quoted model names; the values go as parameters.
    return RawSQL(_receipt_sql(alias), (pixel_id, event, event_id), output_field=DateTimeField())  # noqa: S611


@lru_cache(maxsize=8)
def _context_sql(alias, names):
    from tiktok_tracking.models import CheckoutContext

    quote = connections[alias].ops.quote_name
    meta = CheckoutContext._meta
    columns = ", ".join(quote(meta.get_field(name).column) for name in ("id", *names))
    order_id = quote(meta.get_field("order_id").column)
    return f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {order_id} = %s LIMIT 1"  # noqa: S608


def checkout_context(order_id, names):
    """The CheckoutContext of ``order_id`` with only the fields ``names`` loaded, or None."""
    from tiktok_tracking.models import CheckoutContext

    alias = router.db_for_read(CheckoutContext)
    rows = CheckoutContext.objects.using(alias).raw(_context_sql(alias, tuple(names)), [order_id])
    return next(iter(rows), None)


@lru_cache(maxsize=8)
def _claim_sql(alias, names):
    from tiktok_tracking.models import ArchivedEvent, TrackedEvent

    quote = connections[alias].ops.quote_name
    meta = TrackedEvent._meta

    def column(name):
        return _column(quote, TrackedEvent, name)

    table, pk = quote(meta.db_table), column("pk")
    archive = quote(ArchivedEvent._meta.db_table)
    # Whether the event is already in the archive (see delivery.drop_archived_twins), read on
    # the archive's unique index in the same statement.
    same = " AND ".join(
        f"{archive}.{column(name)} = {table}.{column(name)}" for name in RECEIPT_KEY
    )
    archived = f"EXISTS (SELECT 1 FROM {archive} WHERE {same})"  # noqa: S608
    loaded = (
        f"{column('payload')}::text" if name == "payload_json" else column(name) for name in names
    )
    returned = ", ".join(
        [
            *loaded,
            archived,
            _latest_consent_sql(quote, table, column("visitor_id")),
            column("next_attempt_at"),
        ]
    )
    # The statuses are written in, not passed: the planner matches the partial index on due
    # rows only against the literal of its condition.
    pending, sending = TrackedEvent.Status.PENDING.value, TrackedEvent.Status.SENDING.value
    return (
        f"UPDATE {table} SET {column('status')} = '{sending}', "  # noqa: S608
        f"{column('claim_token')} = %s, "
        f"{column('lease_expires_at')} = {DATABASE_NOW} + make_interval(secs => %s), "
        f"{column('claimed_by')} = %s, {column('claimed_at')} = {DATABASE_NOW}, "
        f"{column('attempts')} = {column('attempts')} + 1, {column('updated_at')} = {DATABASE_NOW} "
        f"WHERE {pk} IN (SELECT {pk} FROM {table} WHERE {column('status')} = '{pending}' "
        f"AND {column('next_attempt_at')} <= {DATABASE_NOW} "
        f"ORDER BY {column('next_attempt_at')}, {pk} LIMIT %s FOR UPDATE SKIP LOCKED) "
        f"RETURNING {returned}"
    )


def _latest_consent_sql(quote, table, visitor_id):
    """The visitor's latest recorded consent status as the claim returns it: ``''`` where the
    row has no visitor or the visitor no record (read on the consent table's latest-first
    index), as ``ConsentRecord.latest_statuses`` would find it."""
    from tiktok_tracking.models import ConsentRecord

    consent = quote(ConsentRecord._meta.db_table)

    def column(name):
        return f"{consent}.{_column(quote, ConsentRecord, name)}"

    latest = (
        f"(SELECT {column('status')} FROM {consent} "  # noqa: S608
        f"WHERE {column('visitor_id')} = {table}.{visitor_id} "
        f"ORDER BY {column('created_at')} DESC, {column('pk')} DESC LIMIT 1)"
    )
    return f"CASE WHEN {table}.{visitor_id} = '' THEN '' ELSE COALESCE({latest}, '') END"


def on_postgresql(alias):
    """Whether the statements below serve: PostgreSQL's UPDATE returns rows, its SELECT skips
    what other workers locked, and it takes a list as one array parameter."""
    return connections[alias].vendor == "postgresql"


def claim_due(alias, names, *, limit, token, worker, lease_seconds):
    """Claim up to ``limit`` rows due by the database's clock for ``token``, held by ``worker``
    (``host:pid``) for ``lease_seconds`` from now by that clock: their fields ``names``
    (``payload_json``: the payload as its JSON text), whether the archive holds their event
    and their visitor's latest consent (``''`` for none), oldest due first."""
    params = [token, float(lease_seconds), worker, limit]
    with connections[alias].cursor() as cursor:
        cursor.execute(_claim_sql(alias, tuple(names)), params)
        rows = cursor.fetchall()
    # RETURNING keeps no order: sort by the due time it returns last, then drop it.
    rows.sort(key=lambda row: (row[-1], row[0]))
    return [row[:-1] for row in rows]


@lru_cache(maxsize=8)
def _attempts_sql(alias, answer_pk="%s"):
    """The attempt log's INSERT of one array of event ids, each with ``answer_pk``: a
    parameter, or (in ``_settle_sql``) the id the answer's INSERT returned."""
    from tiktok_tracking.models import DeliveryAttempt

    quote = connections[alias].ops.quote_name
    meta = DeliveryAttempt._meta
    event, answer = (quote(meta.get_field(name).column) for name in ("tracked_event", "answer"))
    return (
        f"INSERT INTO {quote(meta.db_table)} ({event}, {answer}) "
        f"SELECT unnest(%s::bigint[]), {answer_pk}"
    )


def log_attempts(alias, answer_pk, tracked_event_ids):
    """One DeliveryAttempt per event of ``tracked_event_ids``, naming the answer ``answer_pk``."""
    with connections[alias].cursor() as cursor:
        cursor.execute(_attempts_sql(alias), [list(tracked_event_ids), answer_pk])


@lru_cache(maxsize=8)
def _settle_sql(alias, answer_names, row_names):
    from tiktok_tracking.models import DeliveryAnswer, TrackedEvent

    quote = connections[alias].ops.quote_name

    def column(model, name):
        return _column(quote, model, name)

    answers = quote(DeliveryAnswer._meta.db_table)
    answer_columns = ", ".join(column(DeliveryAnswer, name) for name, _ in answer_names)
    answer_values = ", ".join(_placeholder(at_now) for _, at_now in answer_names)
    answer_pk = column(DeliveryAnswer, "pk")
    updates = ", ".join(
        f"{column(TrackedEvent, name)} = {_placeholder(at_now)}" for name, at_now in row_names
    )
    return (
        f"WITH answer AS (INSERT INTO {answers} ({answer_columns}) "  # noqa: S608
        f"VALUES ({answer_values}) RETURNING {answer_pk}), "
        f"attempts AS ({_attempts_sql(alias, f'{answer_pk} FROM answer')}) "
        f"UPDATE {quote(TrackedEvent._meta.db_table)} SET {updates} "
        f"WHERE {column(TrackedEvent, 'pk')} = ANY(%s::bigint[]) "
        f"AND {column(TrackedEvent, 'claim_token')} = ANY(%s::text[])"
    )


def _placeholder(at_now):
    return DATABASE_NOW if at_now else "%s"


def _placed(fields):
    """``((name, at_now), ...)``: each field of ``fields``, and whether its value is ``Now()``,
    the database's clock, written into the statement rather than passed."""
    return tuple((name, isinstance(value, Now)) for name, value in fields.items())


def settle(alias, answer, pks, tokens, values):
    """In one statement: log ``answer`` (DeliveryAnswer fields) with an attempt for each of
    ``pks``, and set ``values`` on those of the rows still held by one of ``tokens``; a field
    given as ``Now()`` takes the database's time of the statement."""
    from tiktok_tracking.models import DeliveryAnswer, TrackedEvent

    connection = connections[alias]

    def prepared(model, fields):
        return [
            model._meta.get_field(name).get_db_prep_save(value, connection)
            for name, value in fields.items()
            if not isinstance(value, Now)
        ]

    params = [
        *prepared(DeliveryAnswer, answer),
        list(pks),
        *prepared(TrackedEvent, values),
        list(pks),
        list(tokens),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_settle_sql(alias, _placed(answer), _placed(values)), params)
