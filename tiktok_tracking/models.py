"""The outbox (TrackedEvent), its archive, the delivery log and the captured checkout context."""

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from tiktok_tracking.sql import DatabaseNow


class EventQuerySet(models.QuerySet):
    def failed(self):
        return self.filter(status=EventFields.Status.FAILED)

    def delivered(self):
        return self.filter(status=EventFields.Status.DELIVERED)

    def for_order(self, order_id):
        return self.filter(order_id=str(order_id))


class TrackedEventQuerySet(EventQuerySet):
    # Both compare against the database's clock (DatabaseNow), never this process's: the
    # workers and sweepers of several hosts then agree on what is due and whose lease has run
    # out, however far their own clocks drift (docs/deployment.md, "One clock").
    def due(self):
        """Rows waiting to be sent whose next attempt time has come."""
        return self.filter(status=TrackedEvent.Status.PENDING, next_attempt_at__lte=DatabaseNow())

    def expired_leases(self):
        """Rows claimed by a worker that died or hung before recording an outcome."""
        return self.filter(status=TrackedEvent.Status.SENDING, lease_expires_at__lt=DatabaseNow())


class EventFields(models.Model):
    """What is known of one event for one pixel: the columns the outbox and the archive share."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")
        SUPPRESSED = "suppressed", _("Suppressed")

    pixel_id = models.CharField(_("pixel id"), max_length=64)
    event = models.CharField(_("event"), max_length=64, help_text=_("TikTok event name."))
    event_id = models.CharField(
        _("event id"),
        max_length=255,
        help_text=_("Shared by the browser and server lanes so TikTok deduplicates them."),
    )
    order_id = models.CharField(_("order id"), max_length=128)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    payload = models.JSONField(
        _("payload"),
        help_text=_("The Events API data item; match keys hashed, raw ip/user agent until purged."),
    )
    event_time = models.DateTimeField(_("event time"))
    test_event_code = models.CharField(
        _("test event code"),
        max_length=64,
        blank=True,
        help_text=_("Sent with this test code instead of the configured one, when set."),
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    lease_expires_at = models.DateTimeField(
        _("lease expires at"),
        null=True,
        blank=True,
        help_text=_("While sending: when the sweeper may take the row back from its worker."),
    )
    claim_token = models.CharField(_("claim token"), max_length=32, blank=True)
    # The last claim, kept after its outcome is recorded: once the sweeper has taken a row
    # back, or a batch went wrong, its page still names the worker that held it. NULL, not "",
    # until a claim: processes of the previous release, which do not name the column, go on
    # recording checkouts (and archiving) while the migration that adds it is applied.
    claimed_by = models.CharField(  # noqa: DJ001
        _("last claimed by"),
        max_length=80,
        null=True,
        blank=True,
        help_text=_("The worker's host name and process id, e.g. web-1:4242."),
    )
    claimed_at = models.DateTimeField(_("last claimed at"), null=True, blank=True)
    last_http_status = models.PositiveSmallIntegerField(
        _("last HTTP status"), null=True, blank=True
    )
    last_code = models.IntegerField(_("last TikTok code"), null=True, blank=True)
    last_message = models.TextField(_("last TikTok message"), blank=True)
    last_request_id = models.CharField(_("last request id"), max_length=128, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    suppressed_reason = models.CharField(_("suppressed because"), max_length=255, blank=True)
    visitor_id = models.CharField(
        _("visitor id"),
        max_length=64,
        blank=True,
        help_text=_("First-party visitor id whose latest consent is re-checked at send time."),
    )
    country = models.CharField(_("country"), max_length=2, blank=True)
    consent_status = models.CharField(
        _("consent at record time"),
        max_length=16,
        blank=True,
        help_text=_("granted, denied, or blank when the visitor was never asked."),
    )
    match_keys = models.PositiveSmallIntegerField(
        _("match keys"),
        default=0,
        help_text=_("Bitmask of the user match keys sent (see events.MATCH_KEYS)."),
    )
    browser_seen_at = models.DateTimeField(
        _("browser receipt at"),
        null=True,
        blank=True,
        help_text=_("When the thank-you page reported that the pixel fired this event."),
    )
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    personal_data_purged_at = models.DateTimeField(
        _("raw ip/user agent purged at"), null=True, blank=True
    )
    created_at = models.DateTimeField(_("created at"))
    updated_at = models.DateTimeField(_("updated at"))

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.event} {self.event_id} ({self.status})"


class TrackedEvent(EventFields):
    """The outbox: one event for one pixel, from the moment it is recorded until it is archived.

    It carries only the indexes delivery needs, because every checkout INSERT and every
    delivery UPDATE (a status change touches every index) pays for each one. The admin's
    filters over history read ``ArchivedEvent``; finished rows move there after
    ``OUTBOX_RETENTION_HOURS``, so this table holds the in-flight and recent rows only.
    """

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = TrackedEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("tracked event")
        verbose_name_plural = _("tracked events")
        permissions = [("send_trackedevent", _("Can send tracked events to TikTok from the admin"))]
        constraints = [
            # One row per event and pixel; also the index a browser receipt finds its row by.
            models.UniqueConstraint(
                fields=["pixel_id", "event", "event_id"], name="tiktok_tracking_one_row_per_event"
            )
        ]
        indexes = [
            # The delivery claim and the sweeper each read one narrow slice of the table.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="tiktok_tracking_due",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="sending"),
                name="tiktok_tracking_leased",
            ),
        ]


class ArchivedEvent(EventFields):
    """A finished event moved out of the outbox: the history the admin filters and searches.

    Written in bulk by ``archive.archive_finished`` (beat), never by a checkout or a delivery,
    so its indexes cost neither. Its id is the outbox row's, which its attempts still carry.
    """

    id = models.BigIntegerField(_("id"), primary_key=True)
    archived_at = models.DateTimeField(_("archived at"), default=timezone.now)

    objects = EventQuerySet.as_manager()

    class Meta:
        verbose_name = _("archived event")
        verbose_name_plural = _("archived events")
        constraints = [
            models.UniqueConstraint(
                fields=["pixel_id", "event", "event_id"], name="tiktok_tracking_archived_once"
            )
        ]
        indexes = [
            # One index behind each admin search and filter, ordered like the list.
            models.Index(fields=["created_at"], name="tiktok_tracking_arch_created"),
            models.Index(fields=["order_id"], name="tiktok_tracking_arch_order"),
            models.Index(fields=["event_id"], name="tiktok_tracking_arch_event_id"),
            models.Index(fields=["last_request_id"], name="tiktok_tracking_arch_request"),
            models.Index(fields=["status", "created_at"], name="tiktok_tracking_arch_status"),
            models.Index(fields=["event", "created_at"], name="tiktok_tracking_arch_event"),
            models.Index(fields=["country", "created_at"], name="tiktok_tracking_arch_country"),
            models.Index(
                fields=["consent_status", "created_at"], name="tiktok_tracking_arch_consent"
            ),
            models.Index(fields=["last_code", "created_at"], name="tiktok_tracking_arch_code"),
            models.Index(fields=["browser_seen_at"], name="tiktok_tracking_arch_seen"),
            # The dedup verdicts are status x receipt: answered from the index alone.
            models.Index(fields=["status", "browser_seen_at"], name="tiktok_tracking_arch_verdict"),
        ]


# Where the recorded events are: the outbox, and the archive its finished rows move to.
EVENT_TABLES = (TrackedEvent, ArchivedEvent)


class DeliveryAnswer(models.Model):
    """Append-only log: one row per outcome of a request to the Events API, shared by its events.

    The outcome is TikTok's answer, or the error that stood for one (a timeout, a refused
    connection)."""

    class Outcome(models.TextChoices):
        DELIVERED = "delivered", _("Delivered")
        TRANSIENT = "transient", _("Transient error")
        PERMANENT = "permanent", _("Permanent error")

    attempted_at = models.DateTimeField(_("attempted at"), default=timezone.now)
    # One answer can treat the events of a request differently (TikTok naming some of them):
    # each outcome is a row of its own, with the request's other fields repeated.
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    batch_size = models.PositiveIntegerField(_("events in the request"))
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    code = models.IntegerField(_("TikTok code"), null=True, blank=True)
    message = models.TextField(_("message"), blank=True)
    request_id = models.CharField(_("request id"), max_length=128, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)

    class Meta:
        verbose_name = _("delivery answer")
        verbose_name_plural = _("delivery answers")
        ordering = ["attempted_at", "pk"]

    def __str__(self):
        return f"{self.outcome} {self.code} {self.request_id}"


class DeliveryAttempt(models.Model):
    """Append-only log: one narrow row per event per request, naming the answer it got."""

    # No database constraint: the attempts of an event stay when it moves to the archive,
    # which keeps its id.
    tracked_event = models.ForeignKey(
        TrackedEvent,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="delivery_attempts",
        verbose_name=_("tracked event"),
    )
    answer = models.ForeignKey(
        DeliveryAnswer,
        on_delete=models.CASCADE,
        related_name="attempts",
        verbose_name=_("answer"),
    )

    class Meta:
        verbose_name = _("delivery attempt")
        verbose_name_plural = _("delivery attempts")
        # Rows are appended as requests are answered: their ids are in the order of time.
        ordering = ["pk"]

    def __str__(self):
        return f"event {self.tracked_event_id}, answer {self.answer_id}"


class Refund(models.Model):
    """A refund or cancellation the shop signalled: recorded against the order's purchase.

    TikTok has no refund event, so nothing here is sent: it keeps the shop's net figures (what
    a rule's ROAS should be read against) on the shop's side.
    """

    order_id = models.CharField(_("order id"), max_length=128)
    # The purchase it takes back, as both lanes sent it.
    event_id = models.CharField(_("purchase event id"), max_length=255)
    # What makes one refund of an order distinct: the shop's refund id, else "full" or the
    # partial amount, so a webhook delivered twice records its refund once.
    refund_key = models.CharField(_("refund key"), max_length=64)
    # What the shop's signal asked for (the order's value for a whole refund), and what it took:
    # never more than the order's earlier refunds left of it, so an order's refunds add up to
    # its value at most. Null on rows recorded before it was kept.
    requested = models.DecimalField(
        _("amount asked"), max_digits=24, decimal_places=6, null=True, blank=True
    )
    amount = models.DecimalField(
        _("amount"),
        max_digits=24,
        decimal_places=6,
        help_text=_("What the refund takes back: what was asked, within what was left."),
    )
    currency = models.CharField(_("currency"), max_length=3)
    full = models.BooleanField(_("the whole order"), default=False)
    order_value = models.DecimalField(
        _("order value"),
        max_digits=24,
        decimal_places=6,
        help_text=_("The order's value when its first refund was recorded."),
    )
    # Whether the order's purchase was recorded (outbox or archive) when the refund was: only
    # refunds of orders the shop was paid for, and TikTok told of, take anything back from the
    # figures (refunds.counted_refunds).
    order_paid = models.BooleanField(_("order known as paid"), default=False)
    # The refund's place among its order's refunds, 1, 2, ...: unique, so two refunds of one
    # order recorded at once cannot both take what the same earlier ones left.
    sequence = models.PositiveIntegerField(_("refund number"), null=True, blank=True)
    country = models.CharField(_("country"), max_length=2, blank=True)
    refunded_at = models.DateTimeField(_("refunded at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        ordering = ["refunded_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["order_id", "refund_key"], name="tiktok_refund_once_per_key"
            ),
            models.UniqueConstraint(
                fields=["order_id", "sequence"], name="tiktok_refund_one_per_number"
            ),
        ]

    def __str__(self):
        return f"refund of order {self.order_id}: {self.amount} {self.currency}"


class ReadinessReport(models.Model):
    """A rule readiness report as the periodic task computed it: the feed serves the latest."""

    computed_at = models.DateTimeField(_("computed at"), default=timezone.now, db_index=True)
    # The document of readiness.report.build: every market's verdicts, reasons and figures.
    document = models.JSONField(_("document"))
    # The latest configuration record when the report was computed: the next report alerts on
    # the records after it (an id, not a time: processes' clocks and commits interleave).
    config_change_id = models.BigIntegerField(_("configuration record"), null=True, blank=True)
    # The report this one was compared with, the latest when it was computed. Unique: of two
    # runs that read the same latest report (two beats, or a slow run overlapping the next),
    # only the first to store its report keeps it and raises the alerts, never both.
    previous = models.OneToOneField(
        "self",
        verbose_name=_("compared with"),
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="next_report",
    )

    class Meta:
        verbose_name = _("readiness report")
        verbose_name_plural = _("readiness reports")
        get_latest_by = ["computed_at", "pk"]

    def __str__(self):
        return f"readiness report of {self.computed_at:%Y-%m-%d %H:%M}"


class FeedToken(models.Model):
    """A consumer's token for the readiness feed (a rule engine, a cron job): only its hash is
    kept; the token itself is shown once, when it is created."""

    name = models.CharField(_("name"), max_length=100, help_text=_("Who reads the feed with it."))
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True, editable=False)
    # The token's first characters, to tell tokens apart without keeping them.
    hint = models.CharField(_("begins with"), max_length=8, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("feed token")
        verbose_name_plural = _("feed tokens")
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"


class ReadinessAlert(models.Model):
    """A market's readiness verdict changed, or the tracking configuration did: the alert, and
    its delivery to the webhook."""

    class Kind(models.TextChoices):
        READINESS_CHANGED = "readiness_changed", _("Market readiness changed")
        CONFIG_CHANGED = "config_changed", _("Tracking configuration changed")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")
        # No ALERT_WEBHOOK_URL when the alert was raised: nothing was posted, nothing will be.
        NOT_CONFIGURED = "not_configured", _("Not configured")

    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    kind = models.CharField(
        _("kind"), max_length=32, choices=Kind.choices, default=Kind.READINESS_CHANGED
    )
    # A configuration change concerns every market: market, old and new stay blank.
    market = models.CharField(_("market"), max_length=64, blank=True)
    old = models.CharField(_("verdict before"), max_length=32, blank=True)
    new = models.CharField(_("verdict now"), max_length=32, blank=True)
    reasons = models.JSONField(_("reasons"), default=list)
    # The webhook's delivery: none configured leaves the alert "not configured", no attempt.
    status = models.CharField(
        _("webhook"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("readiness alert")
        verbose_name_plural = _("readiness alerts")
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        if self.kind == self.Kind.CONFIG_CHANGED:
            return "tracking configuration changed"
        return f"{self.market}: {self.old} -> {self.new}"


class CheckoutContext(models.Model):
    """Browser context captured at checkout, so a webhook without a request still sends it."""

    order_id = models.CharField(_("order id"), max_length=128, unique=True)
    ttclid = models.CharField(_("ttclid"), max_length=512, blank=True)
    ttp = models.CharField(_("_ttp cookie"), max_length=512, blank=True)
    ip = models.GenericIPAddressField(_("ip address"), null=True, blank=True)
    user_agent = models.TextField(_("user agent"), blank=True)
    page_url = models.TextField(_("page url"), blank=True)
    referrer = models.TextField(_("referrer"), blank=True)
    locale = models.CharField(_("locale"), max_length=35, blank=True)
    visitor_id = models.CharField(_("visitor id"), max_length=64, blank=True)
    consent_status = models.CharField(_("consent at checkout"), max_length=16, blank=True)
    country = models.CharField(_("country"), max_length=2, blank=True)
    limited_data_use = models.BooleanField(_("limited data use"), default=False)
    captured_at = models.DateTimeField(_("captured at"), default=timezone.now, db_index=True)
    personal_data_purged_at = models.DateTimeField(
        _("raw ip/user agent purged at"), null=True, blank=True
    )

    class Meta:
        verbose_name = _("checkout context")
        verbose_name_plural = _("checkout contexts")

    def __str__(self):
        return f"context of order {self.order_id}"


class ConsentRecord(models.Model):
    """Append-only log of a visitor's consent choices; the latest row is the current state."""

    class Status(models.TextChoices):
        GRANTED = "granted", _("Granted")
        DENIED = "denied", _("Denied")

    visitor_id = models.CharField(_("visitor id"), max_length=64)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices)
    source = models.CharField(
        _("source"), max_length=32, help_text=_("Where the choice was made: banner, cmp, api ...")
    )
    policy_version = models.CharField(_("policy version"), max_length=32)
    country = models.CharField(_("country"), max_length=2, blank=True)
    created_at = models.DateTimeField(_("recorded at"), default=timezone.now)

    class Meta:
        verbose_name = _("consent record")
        verbose_name_plural = _("consent records")
        indexes = [
            models.Index(
                fields=["visitor_id", "-created_at"], name="tiktok_tracking_consent_latest"
            )
        ]

    def __str__(self):
        return f"{self.visitor_id}: {self.status}"

    @classmethod
    def latest_statuses(cls, visitor_ids):
        """{visitor_id: latest status} for the given visitors, in one query."""
        latest = {}
        rows = (
            cls.objects.filter(visitor_id__in=set(visitor_ids))
            .order_by("visitor_id", "created_at", "pk")
            .values_list("visitor_id", "status")
        )
        for visitor_id, status in rows:
            latest[visitor_id] = status  # ordered oldest first: the last one wins
        return latest


class BrowserReceipt(models.Model):
    """The thank-you page's report that the pixel fired an event; one per event, never replayed."""

    pixel_id = models.CharField(_("pixel id"), max_length=64)
    event = models.CharField(_("event"), max_length=64)
    event_id = models.CharField(_("event id"), max_length=255)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)

    class Meta:
        verbose_name = _("browser receipt")
        verbose_name_plural = _("browser receipts")
        constraints = [
            models.UniqueConstraint(
                fields=["pixel_id", "event", "event_id"], name="tiktok_tracking_one_receipt"
            )
        ]
        # The dashboard counts a period's receipts by name: answered from the index alone.
        indexes = [
            models.Index(fields=["received_at", "event"], name="tiktok_tracking_receipt_time")
        ]

    def __str__(self):
        return f"{self.event} {self.event_id} seen {self.received_at:%Y-%m-%d %H:%M}"


class ReceiptTally(models.Model):
    """Receipts of funnel events with a random event_id (a product page's ViewContent), counted
    per day: they match no server row, and a row each would grow with the shop's page views."""

    day = models.DateField(_("day"))
    pixel_id = models.CharField(_("pixel id"), max_length=64)
    event = models.CharField(_("event"), max_length=64)
    receipts = models.PositiveIntegerField(_("receipts"), default=0)

    class Meta:
        verbose_name = _("receipt tally")
        verbose_name_plural = _("receipt tallies")
        constraints = [
            models.UniqueConstraint(
                fields=["day", "pixel_id", "event"], name="tiktok_tracking_one_tally_a_day"
            )
        ]

    def __str__(self):
        return f"{self.receipts} {self.event} receipts on {self.day}"


class ConfigChange(models.Model):
    """A record of the tracking configuration each time it changes (the token only as set/unset)."""

    recorded_at = models.DateTimeField(_("recorded at"), default=timezone.now, db_index=True)
    fingerprint = models.CharField(_("fingerprint"), max_length=64)
    settings = models.JSONField(_("settings"))

    class Meta:
        verbose_name = _("configuration change")
        verbose_name_plural = _("configuration changes")
        ordering = ["-recorded_at", "-pk"]

    def __str__(self):
        return f"configuration of {self.recorded_at:%Y-%m-%d %H:%M}"


class DailyRollup(models.Model):
    """The tracked events of one closed calendar day, counted per group of the dashboard's splits.

    Rebuilt by ``rollups.rebuild_days``: the dashboard reads closed days from here and only
    today from TrackedEvent, so a 30-day page does not scan a month of rows.
    """

    # last_code is part of the unique key, and a NULL there would never collide on either
    # database (Django 4.2 has no nulls_distinct): "no code" is stored as this value.
    NO_CODE = -1

    day = models.DateField(_("day"))
    event = models.CharField(_("event"), max_length=64)
    status = models.CharField(_("status"), max_length=16)
    country = models.CharField(_("country"), max_length=2, blank=True)
    consent_status = models.CharField(_("consent at record time"), max_length=16, blank=True)
    browser_seen = models.BooleanField(_("browser receipt"), default=False)
    last_code = models.IntegerField(
        _("last TikTok code"), default=NO_CODE, help_text=_("-1 when the row has no code.")
    )
    events = models.PositiveIntegerField(_("events"), default=0)
    with_email = models.PositiveIntegerField(_("with email"), default=0)
    with_phone = models.PositiveIntegerField(_("with phone"), default=0)
    with_external_id = models.PositiveIntegerField(_("with external id"), default=0)
    with_ttclid = models.PositiveIntegerField(_("with ttclid"), default=0)
    with_ttp = models.PositiveIntegerField(_("with _ttp"), default=0)
    with_ip = models.PositiveIntegerField(_("with ip"), default=0)
    with_user_agent = models.PositiveIntegerField(_("with user agent"), default=0)
    # Not derivable from the two counts above, and the match quality check is judged on it.
    with_email_or_phone = models.PositiveIntegerField(_("with email or phone"), default=0)
    # The greatest message of the group, so the failures table keeps its example per code.
    example_message = models.TextField(_("example TikTok message"), blank=True)
    example_error = models.TextField(_("example error"), blank=True)
    computed_at = models.DateTimeField(_("computed at"), default=timezone.now)

    class Meta:
        verbose_name = _("daily rollup")
        verbose_name_plural = _("daily rollups")
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "day",
                    "event",
                    "status",
                    "country",
                    "consent_status",
                    "browser_seen",
                    "last_code",
                ],
                name="tiktok_tracking_one_rollup_row",
            )
        ]

    def __str__(self):
        return f"{self.day} {self.event} {self.status}: {self.events}"
