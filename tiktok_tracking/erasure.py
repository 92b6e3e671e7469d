"""Erasing what the app holds about one shopper, by email, phone, external id or order id.

The shopper's rows are found the way the app wrote them: the email, phone and customer id are
normalised and hashed as the payload builder hashes them (:mod:`tiktok_tracking.hashing`), and
the event rows carrying one of those digests, or of a given order, lead to their orders and
visitor ids, and those to every other row of the orders and the visitors (one step, not on
and on: a shared browser does not erase the whole shop).

Event rows are blanked, never deleted: the paid-order scan (:mod:`tiktok_tracking.healing`)
records the purchase of any recent paid order that has no row, and an order's signal sent
again records its events anew where none exist. A blanked row keeps what says which event of
which order it was and what became of it (order id, event name and id, status, times,
country, consent status, TikTok's code), with an empty payload and ``suppressed_reason``
:data:`ERASED`. An empty payload is what the resend (admin and ``tiktok_resend``) refuses,
and a row that was not delivered becomes suppressed: no worker claims it, and a suppressed row
is not a placeholder that recording or the scan would rebuild.
"""

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Case, Q, Value, When
from django.db.models.functions import Now

from tiktok_tracking import conf
from tiktok_tracking.adapters import clean_order_id
from tiktok_tracking.events import event_id_for
from tiktok_tracking.exceptions import InvalidOrderData
from tiktok_tracking.hashing import (
    hash_email,
    hash_external_id,
    hash_phone,
    is_sha256_hex,
    normalize_email,
    normalize_phone,
)
from tiktok_tracking.models import (
    EVENT_TABLES,
    BrowserReceipt,
    CheckoutContext,
    ConsentRecord,
    DailyRollup,
    DeliveryAnswer,
    DeliveryAttempt,
    Refund,
    TrackedEvent,
)

logger = logging.getLogger(__name__)

Status = TrackedEvent.Status

# The marker of an erased event row, in ``suppressed_reason`` whatever its status.
ERASED = "erased"
# What replaces a personal value found inside a message or an error text.
ERASED_TEXT = "(erased)"
# Shorter values are not looked for inside free text: "::1" or a two-letter user agent would
# match pieces of unrelated messages, and no real ip, user agent or digest is that short.
MIN_SCRUBBED_LENGTH = 6
# Ids per IN (...) list: far below SQLite's and PostgreSQL's limits on parameters.
LOOKUP_CHUNK = 500

# The payload's user keys that are digests of what the shopper typed.
HASHED_USER_KEYS = ("email", "phone", "external_id")
# The checkout context's columns that say who the shopper is, and their blank values.
CONTEXT_BLANKS = {
    "ttclid": "",
    "ttp": "",
    "ip": None,
    "user_agent": "",
    "page_url": "",
    "referrer": "",
    "locale": "",
    "visitor_id": "",
}
# Free text the app writes from TikTok's answers or a failed read of the order: a personal
# value quoted there is replaced, the rest of the text kept.
EVENT_TEXT_FIELDS = ("last_message", "last_error")
ROLLUP_TEXT_FIELDS = ("example_message", "example_error")


@dataclass(frozen=True)
class ErasureKeys:
    """What to look for: the digests of the payload's user keys, order ids, and the values as
    given (looked for in free text only)."""

    digests: dict = field(default_factory=dict)
    order_ids: frozenset = frozenset()
    raw_values: frozenset = frozenset()


@dataclass
class TableErasure:
    """One table's part of an erasure: rows found, rows blanked, rows deleted, rows kept as
    they are (they hold no personal data)."""

    matched: int = 0
    blanked: int = 0
    deleted: int = 0
    kept: int = 0


@dataclass
class ErasureReport:
    """What an erasure changed (or, in a dry run, would change), table by table."""

    dry_run: bool = False
    orders: int = 0
    visitors: int = 0
    # Events still waiting to be sent: suppressed, never sent.
    suppressed: int = 0
    tables: dict = field(default_factory=dict)

    def table(self, model):
        return self.tables.setdefault(model.__name__, TableErasure())

    @property
    def matched(self):
        return sum(table.matched for table in self.tables.values())


def erasure_keys(*, email=None, phone=None, external_id=None, order_id=None, country=None):
    """The :class:`ErasureKeys` of the given values (pure); ValueError for a value that is not
    one, or when none is given.

    ``phone`` is read as the payload builder reads it: in E.164 form, a national number in
    ``country`` (the order's ISO code). ``order_id`` may be one id or several. A value that is
    already a SHA-256 digest is taken as one. Errors never quote the value: it is personal.
    """
    digests, raw = {}, set()
    if _given(email):
        digest = hash_email(email)
        if digest is None:
            raise ValueError("The email given is not an email address (it has no @).")
        digests["email"] = digest
        raw.update(_variants(email, normalize_email(email)))
    if _given(phone):
        digest = hash_phone(phone, country)
        if digest is None:
            raise ValueError(
                "The phone number given is not a possible number: write it with its country "
                "code (+49...), or name the order's country."
            )
        digests["phone"] = digest
        raw.update(_variants(phone, normalize_phone(phone, country)))
    if _given(external_id):
        digest = hash_external_id(external_id)
        digests["external_id"] = digest
        raw.update(_variants(external_id))
    order_ids = set()
    for value in _as_list(order_id):
        if not _given(value):
            continue
        try:
            order_ids.add(clean_order_id(value))
        except InvalidOrderData as exc:
            raise ValueError(f"An order id given is not one: {exc}") from exc
    if not digests and not order_ids:
        raise ValueError("Name at least one of: email, phone, external id, order id.")
    # A digest given as the value is not a raw value: looked for as a digest already.
    raw = {value for value in raw if value and not is_sha256_hex(value)}
    return ErasureKeys(digests=digests, order_ids=frozenset(order_ids), raw_values=frozenset(raw))


def _given(value):
    return value is not None and str(value).strip() != ""


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _variants(value, *normalised):
    return {str(value), str(value).strip(), *(v for v in normalised if v)}


def erase_personal_data(
    *,
    email=None,
    phone=None,
    external_id=None,
    order_id=None,
    country=None,
    keep_consent_records=False,
    dry_run=False,
):
    """Erase the personal data the app holds about one shopper; an :class:`ErasureReport`.

    Give at least one key: ``email``, ``phone`` (``country`` reads a national number),
    ``external_id`` (the adapter's customer id) or ``order_id`` (one or several). Found from
    them (see the module's docstring), in one transaction:

    - every event row of the outbox and the archive is blanked: the payload emptied (hashed
      keys, click id, ``_ttp``, ip, user agent, language, page), the visitor id blanked, any
      personal value quoted in TikTok's message or the error replaced, ``suppressed_reason``
      set to :data:`ERASED`; a row not yet delivered is suppressed, so that a pending one is
      never sent (one a worker is sending at that moment may still reach TikTok: its answer
      is then logged, the row stays suppressed);
    - the checkout contexts lose their click id, ``_ttp``, ip, user agent, page, referrer,
      language and visitor id (their consent status and country stay: they still decide the
      event of an order paid after its erasure, recorded from what the order holds then);
    - the visitors' consent records are deleted, unless ``keep_consent_records`` (they may be
      what shows that you had consent; they hold the visitor id, no more);
    - a personal value quoted in a delivery answer of those events, or in a daily rollup's
      example message, is replaced;
    - refunds and browser receipts of the orders are counted and kept: they hold the order's
      figures and ids only, as the blanked event rows do.

    ``dry_run`` finds and counts, and changes nothing. Raises ValueError for a key that is not
    one (the message never quotes it).
    """
    keys = erasure_keys(
        email=email, phone=phone, external_id=external_id, order_id=order_id, country=country
    )
    report = ErasureReport(dry_run=dry_run)
    with transaction.atomic():
        found = _find(keys)
        report.orders, report.visitors = len(found.order_ids), len(found.visitor_ids)
        needles = _needles(keys, found)
        for model, rows in found.events.items():
            _erase_events(model, rows, needles, report, dry_run)
        _erase_contexts(found.contexts, report, dry_run)
        _erase_consent_records(found.visitor_ids, keep_consent_records, report, dry_run)
        _scrub_answers(found.events, needles, report, dry_run)
        _scrub_rollups(needles, report, dry_run)
        _count_kept(found, report)
    if not dry_run:
        # Counts only, for the record of the request: never a value of the shopper's.
        logger.info(
            "TikTok erasure: %d order(s), %d visitor(s): %d row(s) blanked, %d deleted",
            report.orders,
            report.visitors,
            sum(table.blanked for table in report.tables.values()),
            sum(table.deleted for table in report.tables.values()),
        )
    return report


@dataclass
class Found:
    """The rows of one shopper: ``{model: [row values]}`` of events, contexts, ids."""

    events: dict
    contexts: list
    order_ids: set
    visitor_ids: set


EVENT_VALUES = (
    "pk",
    "event_id",
    "order_id",
    "visitor_id",
    "status",
    "payload",
    *EVENT_TEXT_FIELDS,
)
CONTEXT_VALUES = ("pk", "order_id", *CONTEXT_BLANKS)


def _find(keys):
    """The shopper's rows: those carrying a key, then every row of their orders and visitors."""
    seeds = Q(order_id__in=list(keys.order_ids)) if keys.order_ids else Q()
    for user_key, digest in keys.digests.items():
        seeds |= Q(**{f"payload__user__{user_key}": digest})
    order_ids, visitor_ids = set(keys.order_ids), set()
    for model in EVENT_TABLES:
        for order, visitor in model.objects.filter(seeds).values_list("order_id", "visitor_id"):
            order_ids.add(order)
            visitor_ids.add(visitor)
    for visitor in _in_chunks(
        CheckoutContext.objects.values_list("visitor_id", flat=True), "order_id", order_ids
    ):
        visitor_ids.add(visitor)
    visitor_ids.discard("")
    linked = _linked(order_ids, visitor_ids)
    events = {
        model: _rows(model.objects.filter(linked).values(*EVENT_VALUES)) for model in EVENT_TABLES
    }
    contexts = _rows(CheckoutContext.objects.filter(linked).values(*CONTEXT_VALUES))
    for rows in (*events.values(), contexts):
        order_ids.update(row["order_id"] for row in rows)
    return Found(events=events, contexts=contexts, order_ids=order_ids, visitor_ids=visitor_ids)


def _linked(order_ids, visitor_ids):
    """Rows of the orders or the visitors (an empty Q matches nothing here)."""
    linked = Q(pk__in=[])
    for chunk in _chunks(sorted(order_ids)):
        linked |= Q(order_id__in=chunk)
    for chunk in _chunks(sorted(visitor_ids)):
        linked |= Q(visitor_id__in=chunk)
    return linked


def _rows(queryset):
    return list(queryset.order_by("pk"))


def _chunks(values, size=LOOKUP_CHUNK):
    values = list(values)
    return [values[start : start + size] for start in range(0, len(values), size)]


def _in_chunks(queryset, name, values):
    for chunk in _chunks(sorted(values)):
        yield from queryset.filter(**{f"{name}__in": chunk})


def _needles(keys, found):
    """Every personal value of the shopper's rows, and the keys as given: what free text must
    not quote."""
    values = set(keys.raw_values) | set(keys.digests.values())
    for rows in found.events.values():
        for row in rows:
            payload = row["payload"] if isinstance(row["payload"], dict) else {}
            user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
            for value in user.values():
                values.update(_strings(value))
            page = payload.get("page") if isinstance(payload.get("page"), dict) else {}
            for value in page.values():
                values.update(_strings(value))
    for row in found.contexts:
        for name in CONTEXT_BLANKS:
            values.update(_strings(row[name]))
    # Longest first: a value inside a longer one is replaced as part of it.
    return sorted(
        (value for value in values if len(value) >= MIN_SCRUBBED_LENGTH), key=len, reverse=True
    )


def _strings(value):
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item.strip()]
    return []


def scrubbed(text, needles):
    """``text`` with every one of ``needles`` in it replaced by :data:`ERASED_TEXT` (pure)."""
    if not text:
        return text
    for needle in needles:
        if needle in text:
            text = text.replace(needle, ERASED_TEXT)
    return text


def _erase_events(model, rows, needles, report, dry_run):
    table = report.table(model)
    table.matched += len(rows)
    if model is TrackedEvent:
        report.suppressed += sum(row["status"] in (Status.PENDING, Status.SENDING) for row in rows)
    if dry_run or not rows:
        table.blanked += len(rows)
        return
    for chunk in _chunks([row["pk"] for row in rows]):
        table.blanked += model.objects.filter(pk__in=chunk).update(
            payload={},
            visitor_id="",
            # Delivered stays delivered (TikTok has it); anything else is never sent now.
            status=Case(
                When(status=Status.DELIVERED, then=Value(Status.DELIVERED)),
                default=Value(Status.SUPPRESSED),
            ),
            suppressed_reason=ERASED,
            # A worker's answer for a row it holds no longer lands on it.
            claim_token="",
            lease_expires_at=None,
            personal_data_purged_at=Now(),
            updated_at=Now(),
        )
    _scrub_fields(model, rows, EVENT_TEXT_FIELDS, needles)


def _scrub_fields(model, rows, names, needles):
    """Replace the needles in the text fields ``names`` of ``rows`` (their values read)."""
    changed = []
    for row in rows:
        values = {name: scrubbed(row[name], needles) for name in names}
        if any(values[name] != row[name] for name in names):
            changed.append(model(pk=row["pk"], **values))
    if changed:
        model.objects.bulk_update(changed, list(names), batch_size=LOOKUP_CHUNK)
    return len(changed)


def _erase_contexts(contexts, report, dry_run):
    table = report.table(CheckoutContext)
    table.matched += len(contexts)
    if dry_run:
        table.blanked += len(contexts)
        return
    for chunk in _chunks([row["pk"] for row in contexts]):
        table.blanked += CheckoutContext.objects.filter(pk__in=chunk).update(
            **CONTEXT_BLANKS, personal_data_purged_at=Now()
        )


def _erase_consent_records(visitor_ids, keep, report, dry_run):
    table = report.table(ConsentRecord)
    for chunk in _chunks(sorted(visitor_ids)):
        records = ConsentRecord.objects.filter(visitor_id__in=chunk)
        count = records.count()
        table.matched += count
        if keep:
            table.kept += count
        elif dry_run:
            table.deleted += count
        else:
            table.deleted += records.delete()[0]


def _scrub_answers(events, needles, report, dry_run):
    """Replace personal values quoted in the answers TikTok gave to requests carrying the
    shopper's events (shared with other events: the rest of each answer stays)."""
    table = report.table(DeliveryAnswer)
    ids = [row["pk"] for rows in events.values() for row in rows]
    answer_ids = set()
    for chunk in _chunks(ids):
        answer_ids.update(
            DeliveryAttempt.objects.filter(tracked_event_id__in=chunk).values_list(
                "answer_id", flat=True
            )
        )
    table.matched += len(answer_ids)
    answers = []
    for chunk in _chunks(sorted(answer_ids)):
        answers += DeliveryAnswer.objects.filter(pk__in=chunk).values("pk", "message")
    changed = [row for row in answers if scrubbed(row["message"], needles) != row["message"]]
    table.blanked += len(changed)
    table.kept += len(answers) - len(changed)
    if not dry_run:
        _scrub_fields(DeliveryAnswer, changed, ("message",), needles)


def _scrub_rollups(needles, report, dry_run):
    """Replace personal values quoted in the rollups' example messages (one row per day and
    group: a small table, searched whole)."""
    if not needles:
        return
    quoting = Q(pk__in=[])
    for needle in needles:
        for name in ROLLUP_TEXT_FIELDS:
            quoting |= Q(**{f"{name}__contains": needle})
    rows = list(DailyRollup.objects.filter(quoting).values("pk", *ROLLUP_TEXT_FIELDS))
    # The database's search may ignore case (SQLite's LIKE); the replacement does not.
    rows = [
        row
        for row in rows
        if any(scrubbed(row[name], needles) != row[name] for name in ROLLUP_TEXT_FIELDS)
    ]
    if not rows:
        return
    table = report.table(DailyRollup)
    table.matched += len(rows)
    table.blanked += len(rows)
    if not dry_run:
        _scrub_fields(DailyRollup, rows, ROLLUP_TEXT_FIELDS, needles)


def _count_kept(found, report):
    """Count the refunds and receipts of the orders: kept, with no personal data to erase."""
    refunds = report.table(Refund)
    for chunk in _chunks(sorted(found.order_ids)):
        count = Refund.objects.filter(order_id__in=chunk).count()
        refunds.matched += count
        refunds.kept += count
    event_ids = {row["event_id"] for rows in found.events.values() for row in rows}
    purchase = conf.get("PURCHASE_EVENT")
    for order in found.order_ids:
        try:
            # A receipt can come before its event row: the purchase's id names it as well.
            event_ids.add(event_id_for(purchase, order))
        except InvalidOrderData:
            continue
    receipts = report.table(BrowserReceipt)
    for chunk in _chunks(sorted(event_ids)):
        count = BrowserReceipt.objects.filter(event_id__in=chunk).count()
        receipts.matched += count
        receipts.kept += count
