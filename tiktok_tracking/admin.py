"""Admin: the delivery log with dedup verdicts, resend actions, a per-order panel, the dashboard."""

import json
from functools import partial

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections, router
from django.db.models import BooleanField, Case, Q, When
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format, time_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from tiktok_tracking.boundaries import private_url
from tiktok_tracking.dashboard import dashboard_view
from tiktok_tracking.dedup import VERDICTS, dedup_verdict, verdict_filter
from tiktok_tracking.models import (
    EVENT_TABLES,
    ArchivedEvent,
    DeliveryAnswer,
    FeedToken,
    ReadinessAlert,
    Refund,
    TrackedEvent,
)
from tiktok_tracking.pixels import configured_pixels
from tiktok_tracking.readiness.quality import mask_score
from tiktok_tracking.refunds import is_counted, net_value, paid_since_refunded, plain_amount
from tiktok_tracking.replica import reports_read
from tiktok_tracking.resend import REFUSAL_REASONS, resend_events

Status = TrackedEvent.Status

STATUS_COLOURS = {
    Status.PENDING: "#946c00",
    Status.SENDING: "#1f6fb2",
    Status.DELIVERED: "#2e7d32",
    Status.FAILED: "#c62828",
    Status.SUPPRESSED: "#6d6d6d",
}
VERDICT_COLOURS = {
    "merged": "#2e7d32",
    "server_only": "#1f6fb2",
    "browser_only": "#946c00",
    "suppressed": "#6d6d6d",
    "pending": "#946c00",
    "failed": "#c62828",
}
HASH_PREFIX = 8


def badge(text, colour):
    # A long verdict or suppression reason wraps inside its badge rather than widening the
    # column and pushing the list past the screen's edge.
    return format_html(
        '<span style="display:inline-block;padding:1px 6px;border-radius:8px;'
        "color:#fff;background:{};font-size:11px;white-space:normal;max-width:16em;"
        'overflow-wrap:break-word">{}</span>',
        colour,
        text,
    )


def to_the_second(value):
    """A time as the admin shows it here: in the current time zone, as Django shows times, with
    the seconds (Django's own format stops at the minute); None for none."""
    if value is None:
        return None  # the admin's own "empty" sign
    local = timezone.template_localtime(value)
    return f"{date_format(local, 'DATE_FORMAT')} {time_format(local, 'H:i:s')}"


def clock_time(value, now):
    """A time within the day as ``HH:MM:SS`` in the current time zone, with its date when that
    is not today's."""
    local, today = timezone.template_localtime(value), timezone.template_localtime(now)
    if local.date() != today.date():
        return to_the_second(value)
    return time_format(local, "H:i:s")


def duration(seconds):
    """``seconds`` in words a reader takes in at a glance: "45 s", "1 min 40 s", "2 h 5 min"."""
    seconds = round(abs(seconds))
    if seconds < 60:
        return gettext("%(s)d s") % {"s": seconds}
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return gettext("%(min)d min %(s)d s") % {"min": minutes, "s": seconds}
    hours, minutes = divmod(minutes, 60)
    return gettext("%(h)d h %(min)d min") % {"h": hours, "min": minutes}


def lease_text(obj, now):
    """When a row a worker holds goes back to the queue, read from its lease (pure)."""
    expires = obj.lease_expires_at
    if expires is None:
        return ""
    if expires > now:
        return gettext("returns to the queue at %(time)s, in %(left)s") % {
            "time": clock_time(expires, now),
            "left": duration((expires - now).total_seconds()),
        }
    return gettext("lease expired at %(time)s, the sweeper takes it back on its next run") % {
        "time": clock_time(expires, now)
    }


def claim_text(obj, now):
    """Who holds a row being sent, since when, and when it returns to the queue (pure)."""
    if obj.claimed_by:
        held = gettext("claimed by %(worker)s") % {"worker": obj.claimed_by}
    else:
        # Claimed before the app recorded its workers' names.
        held = gettext("claimed by a worker")
    if obj.claimed_at is not None:
        held = gettext("%(held)s since %(time)s") % {
            "held": held,
            "time": clock_time(obj.claimed_at, now),
        }
    lease = lease_text(obj, now)
    return f"{held}; {lease}" if lease else held


def time_field(field_name, model=TrackedEvent):
    """An admin display of ``model``'s datetime field ``field_name`` to the second, under its
    name."""
    field = model._meta.get_field(field_name)

    @admin.display(description=field.verbose_name, ordering=field_name)
    def display(model_admin, obj):
        return to_the_second(getattr(obj, field_name))

    return display


def masked_payload(payload, purged=False):
    """The payload as the admin shows it: hashes shortened, raw ip and user agent hidden, page
    addresses without personal data (pure)."""
    shown = json.loads(json.dumps(payload or {}))
    user = shown.setdefault("user", {})
    for key in ("email", "phone", "external_id"):
        values = user.get(key)
        if isinstance(values, str):
            user[key] = values[:HASH_PREFIX] + "…"
        elif isinstance(values, list):
            user[key] = [str(v)[:HASH_PREFIX] + "…" for v in values]
    for key in ("ip", "user_agent"):
        if key in user:
            user[key] = "(hidden)"
        elif purged:
            user[key] = "(purged)"
    for key in ("ttclid", "ttp"):
        if isinstance(user.get(key), str) and len(user[key]) > 12:
            user[key] = user[key][:12] + "…"
    page = shown.get("page")
    if isinstance(page, dict):
        # Rows recorded before addresses were stripped on the way in may still carry an email
        # in a query string: shown as they would be stored now.
        for key in ("url", "referrer"):
            if key in page:
                page[key] = private_url(page[key]) if isinstance(page[key], str) else None
    elif purged:
        shown["page"] = "(purged)"
    return shown


class VerdictFilter(admin.SimpleListFilter):
    title = _("dedup verdict")
    parameter_name = "verdict"

    def lookups(self, request, model_admin):
        return list(VERDICTS.items())

    def queryset(self, request, queryset):
        if self.value() in VERDICTS:
            return queryset.filter(verdict_filter(self.value()))
        return queryset


class BrowserLaneFilter(admin.SimpleListFilter):
    title = _("browser lane")
    parameter_name = "browser"

    def lookups(self, request, model_admin):
        return [("seen", _("Receipt seen")), ("unseen", _("No receipt"))]

    def queryset(self, request, queryset):
        if self.value() == "seen":
            return queryset.filter(browser_seen_at__isnull=False)
        if self.value() == "unseen":
            return queryset.filter(browser_seen_at__isnull=True)
        return queryset


class IndexedValuesFilter(admin.SimpleListFilter):
    """A filter whose choices are the column's distinct values, read cheaply on either table.

    Django's own field filters run SELECT DISTINCT over the whole column (80 ms at a million
    rows, on every list page). On the archive, where the column leads an index, PostgreSQL
    hops from one value to the next along it (a recursive "loose index scan"); the outbox,
    small by design and without such indexes, is read once for all its filters together.
    """

    field = None
    empty_label = _("(none)")

    def distinct_values(self, model, request):
        table = model._meta.db_table
        column = model._meta.get_field(self.field).column
        # Where the list reads: the replica, when one serves the app's reports.
        connection = connections[router.db_for_read(model)]
        if connection.vendor != "postgresql" or not _leads_an_index(model, self.field):
            return sorted(
                self.unindexed_values(model, request), key=lambda value: (value is None, value)
            )
        quoted = connection.ops.quote_name
        # Only the model's own table and column names go into the SQL, quoted; no user input.
        sql = (
            f"WITH RECURSIVE v AS ("  # noqa: S608
            f" (SELECT {quoted(column)} AS x FROM {quoted(table)}"
            f"  WHERE {quoted(column)} IS NOT NULL ORDER BY 1 LIMIT 1)"
            f" UNION ALL SELECT (SELECT {quoted(column)} FROM {quoted(table)}"
            f"  WHERE {quoted(column)} > v.x ORDER BY 1 LIMIT 1) FROM v WHERE v.x IS NOT NULL"
            f") SELECT x FROM v WHERE x IS NOT NULL"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql)
            values = [row[0] for row in cursor.fetchall()]
        if self.has_empty(model):
            values.append(None)
        return values

    def unindexed_values(self, model, request):
        """The column's values, None for the empty choice, from the outbox's one scan."""
        return unindexed_choices(model, request)[self.field]

    def has_empty(self, model):
        """Whether the choice of rows without a value is offered (one query)."""
        return model.objects.filter(**{f"{self.field}__isnull": True}).exists()

    def lookups(self, request, model_admin):
        return [
            ("" if value is None else str(value), self.label(value))
            for value in self.distinct_values(model_admin.model, request)
        ]

    def label(self, value):
        return self.empty_label if value in (None, "") else str(value)

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == "":
            field = queryset.model._meta.get_field(self.field)
            if field.null:
                return queryset.filter(**{f"{self.field}__isnull": True})
        return queryset.filter(**{self.field: value})


def unindexed_choices(model, request):
    """``{field: set of values}`` of every IndexedValuesFilter column of ``model``, from one
    scan of the table, kept on the request so that its filters share it."""
    cache = request.__dict__.setdefault("_tiktok_tracking_choices", {})
    if model not in cache:
        names = [choice.field for choice in CHOICE_FILTERS] + [NO_CODE_CHOICE]
        combinations = (
            model.objects.order_by()
            .annotate(
                **{
                    NO_CODE_CHOICE: Case(
                        When(NO_CODE_ANSWER, then=True), default=False, output_field=BooleanField()
                    )
                }
            )
            .values_list(*names)
            .distinct()
        )
        cache[model] = {name: set() for name in names}
        for values in combinations:
            for name, value in zip(names, values, strict=True):
                cache[model][name].add(value)
        cache[model][NO_CODE_CHOICE] = True in cache[model][NO_CODE_CHOICE]
    return cache[model]


def _leads_an_index(model, field_name):
    """Whether one of ``model``'s indexes starts with the column ``field_name``."""
    return any(index.fields and index.fields[0] == field_name for index in model._meta.indexes)


class EventFilter(IndexedValuesFilter):
    title = _("event")
    parameter_name = field = "event"


class ConsentStatusFilter(IndexedValuesFilter):
    title = _("consent at record time")
    parameter_name = field = "consent_status"
    empty_label = _("not asked")


class CountryFilter(IndexedValuesFilter):
    title = _("country")
    parameter_name = field = "country"
    empty_label = _("unknown")


# A request was answered, or failed, without a TikTok code: an HTTP error or a network failure.
# A suppressed row never asked TikTok anything, and one never attempted has no answer yet; the
# last error (or HTTP status) is what every recorded outcome but a delivery leaves behind.
NO_CODE_ANSWER = (
    Q(last_code__isnull=True)
    & ~Q(status=Status.SUPPRESSED)
    & (Q(last_http_status__isnull=False) | ~Q(last_error=""))
)


class CodeFilter(IndexedValuesFilter):
    title = _("last TikTok code")
    parameter_name = field = "last_code"
    empty_label = _("no code (HTTP / network)")

    def unindexed_values(self, model, request):
        # The outbox's one scan of its filter columns also says whether any row without a code
        # was answered, or failed, without one.
        choices = unindexed_choices(model, request)
        values = choices[self.field] - {None}
        return values | {None} if choices[NO_CODE_CHOICE] else values

    def has_empty(self, model):
        return model.objects.filter(NO_CODE_ANSWER).exists()

    def queryset(self, request, queryset):
        if self.value() == "":
            return queryset.filter(NO_CODE_ANSWER)
        return super().queryset(request, queryset)


CHOICE_FILTERS = (EventFilter, ConsentStatusFilter, CountryFilter, CodeFilter)
# Read with the filter columns: whether a row is one of CodeFilter's "no code" rows.
NO_CODE_CHOICE = "no_code_answer"


class EstimatedCountPaginator(Paginator):
    """On PostgreSQL an unfiltered list of a big table counts from the planner's estimate."""

    # Below this many rows (as estimated) the table is counted exactly, in the same query.
    ESTIMATE_FROM = 10_000

    @cached_property
    def count(self):
        query = getattr(self.object_list, "query", None)
        if query is None:
            return super().count
        # Where the list reads: the replica, when one serves the app's reports.
        connection = connections[self.object_list.db]
        if connection.vendor != "postgresql" or query.where:
            return super().count
        table = connection.ops.quote_name(self.object_list.model._meta.db_table)
        with connection.cursor() as cursor:
            # One query whatever the size, so the page's query count does not depend on it.
            # Only the model's own quoted table name goes into the SQL.
            cursor.execute(
                "SELECT CASE WHEN reltuples > %s THEN reltuples::bigint "  # noqa: S608
                f"ELSE (SELECT count(*) FROM {table}) END "
                "FROM pg_class WHERE oid = %s::regclass",
                [self.ESTIMATE_FROM, self.object_list.model._meta.db_table],
            )
            row = cursor.fetchone()
        return int(row[0]) if row else super().count


class ReplicaListMixin:
    """The list page reads from the replica (REPLICA_DATABASE) and says how fresh it was; its
    actions (a POST) and every other page read and write the primary."""

    def changelist_view(self, request, extra_context=None):
        if request.method not in ("GET", "HEAD"):
            return super().changelist_view(request, extra_context)
        with reports_read() as read_from:
            response = super().changelist_view(
                request, {**(extra_context or {}), "read_from": read_from}
            )
            # Rendered here: the page's queries run while its template renders.
            if hasattr(response, "render"):
                response.render()
            return response


@admin.register(TrackedEvent)
class TrackedEventAdmin(ReplicaListMixin, admin.ModelAdmin):
    # What a reader looks for first, first: at 1280 px, with the admin's sidebar and the filters
    # open, the verdict and the status are on screen without scrolling sideways.
    list_display = (
        "order_id",
        "event",
        "verdict_badge",
        "status_and_claim",
        "event_id",
        "browser_lane",
        "attempts",
        "last_code",
        "short_message",
        "last_request_id",
        "consent_status",
        "country",
        "created",
    )
    list_filter = (
        "status",
        VerdictFilter,
        BrowserLaneFilter,
        EventFilter,
        ConsentStatusFilter,
        CountryFilter,
        CodeFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    # Exact matches keep every search on an index, even with millions of rows.
    # (case-sensitive: "=" would compare UPPER() of each column and miss the index).
    search_fields = ("order_id__exact", "event_id__exact", "last_request_id__exact")
    search_help_text = _("Exact order id, event_id or TikTok request_id.")
    # Newest first by id: the outbox has no index on created_at, and ids grow with it.
    ordering = ("-pk",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = ("resend", "resend_with_test_code", "mark_suppressed")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "order_id",
                    "event",
                    "event_id",
                    "pixel_id",
                    "status_badge",
                    "verdict_badge",
                    "browser_receipt",
                )
            },
        ),
        (
            _("Delivery"),
            {
                "fields": (
                    "claim",
                    "attempts",
                    "next_attempt",
                    "delivered",
                    "last_http_status",
                    "last_code",
                    "last_message",
                    "last_request_id",
                    "last_error",
                    "test_event_code",
                    "attempts_log",
                )
            },
        ),
        (
            _("Consent"),
            {"fields": ("consent_status", "country", "suppressed_reason", "visitor_id")},
        ),
        (_("Payload (personal data masked)"), {"fields": ("payload_masked",)}),
        (_("Timestamps"), {"fields": ("event_at", "created", "updated")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return [name for fieldset in self.fieldsets for name in fieldset[1]["fields"]]

    def get_fieldsets(self, request, obj=None):
        # Only what can happen to this row: a next attempt only while it waits in the queue
        # (a failed row is retried only when resent), a claim only once a worker took it.
        hidden = set()
        if obj is None or obj.status != Status.PENDING:
            hidden.add("next_attempt")
        if obj is None or (obj.status != Status.SENDING and not obj.claimed_by):
            hidden.add("claim")
        return [
            (title, {**options, "fields": [f for f in options["fields"] if f not in hidden]})
            for title, options in super().get_fieldsets(request, obj)
        ]

    def get_queryset(self, request):
        # The list never needs the payload: leave the largest column in the database.
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer("payload")
        return queryset

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # Rows change only through the actions below, which need the send permission.
        return False

    def has_send_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.send_trackedevent")

    def get_urls(self):
        view = self.admin_site.admin_view(partial(dashboard_view, model_admin=self))
        name = f"{self.opts.app_label}_{self.opts.model_name}_dashboard"
        return [path("dashboard/", view, name=name), *super().get_urls()]

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj):
        return badge(obj.get_status_display(), STATUS_COLOURS.get(obj.status, "#555"))

    @admin.display(description=_("status"), ordering="status")
    def status_and_claim(self, obj):
        """The status, and for a row being sent its claim (its page has a line of its own)."""
        if obj.status != Status.SENDING:
            return self.status_badge(obj)
        # Read from the row's own columns: the list's query count does not grow with it.
        return format_html(
            '{}<div style="font-size:11px;min-width:14em">{}</div>',
            self.status_badge(obj),
            claim_text(obj, timezone.now()),
        )

    @admin.display(description=_("claim"))
    def claim(self, obj):
        now = timezone.now()
        if obj.status == Status.SENDING:
            return claim_text(obj, now)
        # The claim is kept once its outcome is recorded (or the sweeper took it back).
        return gettext("last claimed by %(worker)s at %(time)s") % {
            "worker": obj.claimed_by,
            "time": to_the_second(obj.claimed_at) or "—",
        }

    @admin.display(description=_("next attempt at"))
    def next_attempt(self, obj):
        now = timezone.now()
        due = obj.next_attempt_at
        if due > now:
            left = duration((due - now).total_seconds())
            return gettext("%(time)s, in %(left)s") % {"time": to_the_second(due), "left": left}
        return gettext("%(time)s: due, waiting for a worker") % {"time": to_the_second(due)}

    browser_receipt = time_field("browser_seen_at")
    delivered = time_field("delivered_at")
    event_at = time_field("event_time")
    created = time_field("created_at")
    updated = time_field("updated_at")

    @admin.display(description=_("browser lane"), ordering="browser_seen_at")
    def browser_lane(self, obj):
        return _("seen") if obj.browser_seen_at else "—"

    @admin.display(description=_("dedup verdict"))
    def verdict_badge(self, obj):
        verdict = dedup_verdict(obj.status, obj.browser_seen_at is not None)
        label = VERDICTS[verdict]
        if verdict == "suppressed" and obj.suppressed_reason:
            label = f"{label}: {obj.suppressed_reason}"
        # Room for a verdict on a line or two: squeezed by the columns beside it, a long
        # suppression reason would otherwise wrap a word a line.
        return format_html(
            '<div style="min-width:10em">{}</div>', badge(label, VERDICT_COLOURS[verdict])
        )

    @admin.display(description=_("last message"))
    def short_message(self, obj):
        message = obj.last_message or obj.last_error
        return message if len(message) <= 60 else message[:60] + "…"

    @admin.display(description=_("requests made"))
    def attempts_log(self, obj):
        return attempts_table(obj.pk)

    @admin.display(description=_("payload"))
    def payload_masked(self, obj):
        shown = masked_payload(obj.payload, purged=obj.personal_data_purged_at is not None)
        return format_html("<pre>{}</pre>", json.dumps(shown, indent=2, ensure_ascii=False))

    def _resend(self, request, queryset, test_event_code):
        report = resend_events(queryset, test_event_code=test_event_code)
        if report.requeued:
            self.message_user(
                request,
                ngettext(
                    "%d event queued to be sent again with the same event_id.",
                    "%d events queued to be sent again with the same event_ids.",
                    report.requeued,
                )
                % report.requeued,
                messages.SUCCESS,
            )
        for event_id, reason in report.refused_rows:
            self.message_user(
                request,
                format_html("Not resent: {} ({})", event_id, REFUSAL_REASONS[reason]),
                messages.WARNING,
            )

    @admin.action(description=_("Resend (same event_id)"), permissions=["send"])
    def resend(self, request, queryset):
        self._resend(request, queryset, test_event_code="")

    @admin.action(description=_("Send with the test event code"), permissions=["send"])
    def resend_with_test_code(self, request, queryset):
        # Each pixel has its own test code (PIXELS), or the one pixel TEST_EVENT_CODE's.
        codes = {pixel.pixel_id: pixel.test_event_code for pixel in configured_pixels()}
        pixel_ids = queryset.order_by().values_list("pixel_id", flat=True).distinct()
        for pixel_id in sorted(pixel_ids):
            code = codes.get(pixel_id)
            if not code:
                self.message_user(
                    request,
                    format_html(
                        "Not sent: the events of pixel {} (set its TEST_EVENT_CODE, from "
                        "Events Manager, first).",
                        pixel_id,
                    ),
                    messages.ERROR,
                )
                continue
            self._resend(request, queryset.filter(pixel_id=pixel_id), test_event_code=code)

    @admin.action(description=_("Mark as suppressed"), permissions=["send"])
    def mark_suppressed(self, request, queryset):
        reason = f"suppressed in the admin by {request.user.get_username()}"[:255]
        count = queryset.exclude(status__in=(Status.DELIVERED, Status.SENDING)).update(
            status=Status.SUPPRESSED, suppressed_reason=reason, updated_at=timezone.now()
        )
        self.message_user(
            request,
            ngettext("%d event marked as suppressed.", "%d events marked as suppressed.", count)
            % count,
            messages.SUCCESS,
        )


ATTEMPT_COLUMNS = (
    (_("attempted at"), lambda answer: to_the_second(answer.attempted_at)),
    (_("outcome"), lambda answer: answer.get_outcome_display()),
    (_("HTTP status"), lambda answer: "—" if answer.http_status is None else answer.http_status),
    (_("TikTok code"), lambda answer: "—" if answer.code is None else answer.code),
    (_("message"), lambda answer: answer.message),
    (_("request id"), lambda answer: answer.request_id),
    (_("events in the request"), lambda answer: answer.batch_size),
    (_("duration (ms)"), lambda answer: answer.duration_ms),
)


def attempts_table(event_pk):
    """The requests made for one event and their answers, as a read-only table (one query)."""
    # The attempts keep the id the event had in the outbox, which the archive keeps too.
    answers = DeliveryAnswer.objects.filter(attempts__tracked_event_id=event_pk).order_by(
        "attempted_at", "pk"
    )
    cells = "".join("<td>{}</td>" for _ in ATTEMPT_COLUMNS)
    rows = format_html_join(
        "",
        f"<tr>{cells}</tr>",
        ([value(answer) for _, value in ATTEMPT_COLUMNS] for answer in answers),
    )
    if not rows:
        return _("No attempt was made.")
    return format_html(
        "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "<th>{}</th>", ((title,) for title, _ in ATTEMPT_COLUMNS)),
        rows,
    )


@admin.register(ArchivedEvent)
class ArchivedEventAdmin(TrackedEventAdmin):
    """The history: finished events moved out of the outbox, every filter on an index."""

    ordering = ("-created_at", "-pk")
    actions = ()
    fieldsets = (
        *TrackedEventAdmin.fieldsets,
        (_("Archive"), {"fields": ("archived",)}),
    )

    archived = time_field("archived_at", ArchivedEvent)

    def get_urls(self):
        return admin.ModelAdmin.get_urls(self)


class TikTokOrderAdminMixin:
    """Adds a "TikTok tracking" panel to a shop's OrderAdmin: that order's events and verdicts.

    class OrderAdmin(TikTokOrderAdminMixin, admin.ModelAdmin): ...
    """

    tiktok_order_id_field = None  # defaults to the configured order adapter's order_id()

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "tiktok_tracking_panel")

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if "tiktok_tracking_panel" in fields:
            fields.remove("tiktok_tracking_panel")
        return [*fields, "tiktok_tracking_panel"]

    def tiktok_order_id(self, obj):
        if self.tiktok_order_id_field:
            return str(getattr(obj, self.tiktok_order_id_field))
        from tiktok_tracking.adapters import adapter_for

        return adapter_for(obj).order_id()

    @admin.display(description=_("TikTok tracking"))
    def tiktok_tracking_panel(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        order_id = self.tiktok_order_id(obj)
        rows = sorted(
            (
                row
                for model in EVENT_TABLES
                for row in model.objects.for_order(order_id).defer("payload")
            ),
            key=lambda row: (row.created_at, row.pk),
        )
        refunds = refunds_table(Refund.objects.filter(order_id=order_id))
        if not rows:
            return format_html("{}{}", _("No TikTok events recorded for this order."), refunds)
        body = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td><td>{}</td>"
            "<td class='num'>{}</td><td>{}</td></tr>",
            (
                (
                    reverse(f"admin:tiktok_tracking_{row._meta.model_name}_change", args=[row.pk]),
                    row.event,
                    row.event_id,
                    badge(row.get_status_display(), STATUS_COLOURS.get(row.status, "#555")),
                    VERDICTS[dedup_verdict(row.status, row.browser_seen_at is not None)],
                    mask_score(row.match_keys),
                    row.last_message or row.suppressed_reason or row.last_error or "",
                )
                for row in rows
            ),
        )
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>"
            "</tr></thead><tbody>{}</tbody></table>{}",
            _("event"),
            _("event_id"),
            _("status"),
            _("dedup verdict"),
            _("match quality (est., of 10)"),
            _("TikTok's answer"),
            body,
            refunds,
        )


def refunds_table(refunds):
    """An order's refunds, with what it nets after them; empty when it has none."""
    refunds = list(refunds)
    if not refunds:
        return ""
    paid_since = paid_since_refunded(r.order_id for r in refunds if not r.order_paid)
    refunded = sum(refund.amount for refund in refunds)
    order_value = refunds[-1].order_value
    lines = format_html_join(
        "",
        "<li>{} {} {} ({}), {}{}</li>",
        (
            (
                to_the_second(refund.refunded_at),
                plain_amount(refund.amount),
                refund.currency,
                _("the whole order") if refund.full else _("partial"),
                refund.refund_key,
                refund_notes(refund, is_counted(refund, paid_since)),
            )
            for refund in refunds
        ),
    )
    return format_html(
        "<p><strong>{}</strong> {}</p><ul>{}</ul>",
        _("Refunded (not sent to TikTok, which has no refund event):"),
        _("%(refunded)s of %(value)s %(currency)s; net %(net)s %(currency)s")
        % {
            "refunded": plain_amount(refunded),
            "value": plain_amount(order_value),
            "net": plain_amount(net_value(order_value, refunded)),
            "currency": refunds[-1].currency,
        },
        lines,
    )


def refund_notes(refund, counted):
    """What a refund line adds when it took less than it asked, or is left out of the figures."""
    notes = []
    if refund.requested is not None and refund.amount < refund.requested:
        notes.append(
            _("asked %(requested)s, only %(amount)s was left of the order")
            % {"requested": plain_amount(refund.requested), "amount": plain_amount(refund.amount)}
        )
    if not counted:
        notes.append(_("not counted: no purchase was recorded for this order"))
    return "".join(f"; {note}" for note in notes)


@admin.register(FeedToken)
class FeedTokenAdmin(admin.ModelAdmin):
    """Tokens for the readiness feed: created here (shown once), revoked here, never shown again."""

    list_display = ("name", "hint", "created_at", "revoked_at")
    fields = ("name", "hint", "created_at", "revoked_at")
    readonly_fields = ("hint", "created_at", "revoked_at")
    actions = ("revoke",)

    def has_change_permission(self, request, obj=None):
        # A token is created and revoked, never edited: the name is all there is to set.
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        from tiktok_tracking.readiness.feed import new_token

        token, obj.token_hash, obj.hint = new_token()
        super().save_model(request, obj, form, change)
        self.message_user(
            request,
            format_html(
                "{} <code>{}</code><br>{}",
                _("The feed token for %(name)s:") % {"name": obj.name},
                token,
                _("Copy it now: only its hash is kept, and it is not shown again."),
            ),
            messages.WARNING,
        )

    @admin.action(description=_("Revoke the selected tokens"), permissions=["delete"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(
            request,
            ngettext("%d token revoked.", "%d tokens revoked.", count) % count,
            messages.SUCCESS,
        )


@admin.register(ReadinessAlert)
class ReadinessAlertAdmin(ReplicaListMixin, admin.ModelAdmin):
    """Each change of a market's readiness verdict or of the tracking configuration, and its
    webhook delivery: read only."""

    list_display = (
        "created_at",
        "kind",
        "market",
        "old",
        "new",
        "status",
        "attempts",
        "last_error",
    )
    list_filter = ("kind", "market", "new", "status")
    readonly_fields = (
        "created_at",
        "kind",
        "market",
        "old",
        "new",
        "reasons",
        "status",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "last_error",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
