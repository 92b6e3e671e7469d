"""System checks: misconfiguration shows up in ``manage.py check`` as tiktok_tracking.E00x/W00x."""

import ipaddress
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal

from django.apps import apps
from django.core import checks
from django.utils import timezone
from django.utils.module_loading import import_string

from tiktok_tracking import conf
from tiktok_tracking.events import is_valid_event_name
from tiktok_tracking.exceptions import InvalidOrderData, TikTokTrackingImproperlyConfigured
from tiktok_tracking.partitions import POSTGRES_OPTIONS
from tiktok_tracking.pixels import parse_pixels, site_scoped
from tiktok_tracking.standards import DEDUP_WINDOW_HOURS, MAX_BATCH_SIZE, PURCHASE_EVENT_NAMES

PIXELS_HINT = (
    "PIXELS is a list of dicts with PIXEL_ID, ACCESS_TOKEN, and optionally TEST_EVENT_CODE and "
    "SITES; it replaces the single-pixel keys."
)

MIDDLEWARE_PATH = "tiktok_tracking.middleware.TikTokTrackingMiddleware"
BASE_ADAPTER_PATH = "tiktok_tracking.adapters.OrderAdapter"
REQUEST_CONTEXT_PROCESSOR = "django.template.context_processors.request"
DJANGO_TEMPLATES = "django.template.backends.django.DjangoTemplates"
ADAPTER_HINT = (
    "Point it at your subclass of tiktok_tracking.adapters.OrderAdapter, e.g. "
    "'shop.tracking.ShopOrderAdapter', or leave it unset for the default adapter."
)
# What an order's lines may differ from its value by before tiktok_check calls them wrong: a
# cent per line, for unit prices rounded from a line total.
CONTENTS_MARGIN_PER_LINE = Decimal("0.01")
# How many of the latest paid orders tiktok_check reads through the adapter.
RECENT_ORDERS = 5
RECENT_ORDERS_DAYS = 30


def register():
    checks.register(check_settings, checks.Tags.compatibility)
    checks.register(check_consent_settings, checks.Tags.compatibility)
    checks.register(check_broker, checks.Tags.compatibility)
    checks.register(check_templates, checks.Tags.compatibility)
    checks.register(check_eager_tasks, checks.Tags.compatibility)
    checks.register(check_database_partitions, checks.Tags.compatibility)


def _error(id_, msg, hint=None, warning=False):
    cls = checks.Warning if warning else checks.Error
    return cls(msg, hint=hint, id=f"tiktok_tracking.{id_}")


def check_settings(app_configs=None, **kwargs):
    user = conf.user_settings()
    errors = []
    if not isinstance(user, dict):
        return [_error("E000", f"{conf.SETTING_NAME} must be a dict.")]
    errors.extend(_check_pixels(user))
    if not is_valid_event_name(conf.get("PURCHASE_EVENT")):
        errors.append(
            _error(
                "E003",
                f"{conf.SETTING_NAME}['PURCHASE_EVENT'] = {conf.get('PURCHASE_EVENT')!r} "
                "is not a TikTok event name.",
                hint="Use 'Purchase' (or the legacy 'CompletePayment').",
            )
        )
    errors.extend(_check_adapter())
    errors.extend(_check_events_api_client())
    errors.extend(_check_numbers())
    errors.extend(_check_request_bytes())
    errors.extend(_check_paid_orders())
    errors.extend(_check_funnel_events())
    errors.extend(_check_readiness())
    errors.extend(_check_replica())
    unknown = sorted(set(user) - set(conf.DEFAULTS))
    if unknown:
        errors.append(
            _error(
                "W001",
                f"{conf.SETTING_NAME} has unknown key(s): {', '.join(unknown)}.",
                hint="Check the spelling against the settings reference.",
                warning=True,
            )
        )
    errors.extend(_check_schedule())
    return errors


REPLICA_ROUTER = "tiktok_tracking.replica.ReplicaRouter"


def _check_replica():
    """E021: REPLICA_DATABASE names no other alias in DATABASES, the router that reads from it
    is missing (the reports would read the primary while the settings say otherwise), or
    REPLICA_MAX_WAIT is not a number of seconds."""
    from django.conf import settings

    alias = conf.get("REPLICA_DATABASE")
    wait = conf.get("REPLICA_MAX_WAIT")
    setting = f"{conf.SETTING_NAME}['REPLICA_DATABASE']"
    errors = []
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
        errors.append(
            _error(
                "E021",
                f"{conf.SETTING_NAME}['REPLICA_MAX_WAIT'] = {wait!r} is not a number of "
                "seconds of at least 0.",
            )
        )
    if alias is None:
        return errors
    if not isinstance(alias, str) or alias == "default" or alias not in settings.DATABASES:
        errors.append(
            _error(
                "E021",
                f"{setting} = {alias!r} is not an alias of DATABASES other than 'default'.",
                hint="Name the replica's alias, e.g. DATABASES['replica'], or leave it unset.",
            )
        )
    if REPLICA_ROUTER not in [
        router if isinstance(router, str) else f"{type(router).__module__}.{type(router).__name__}"
        for router in settings.DATABASE_ROUTERS
    ]:
        errors.append(
            _error(
                "E021",
                f"{setting} is set but DATABASE_ROUTERS lacks {REPLICA_ROUTER!r}: the reports "
                "would read the primary.",
                hint=f"Add {REPLICA_ROUTER!r} to DATABASE_ROUTERS.",
            )
        )
    return errors


def _check_schedule():
    """W002: nothing runs the app's periodic tasks: no django-celery-beat (``migrate`` writes
    them into its tables), and the project's Celery ``beat_schedule`` lacks some of them."""
    if apps.is_installed("django_celery_beat"):
        return []
    from celery import current_app

    from tiktok_tracking.schedule import unscheduled_tasks

    missing = unscheduled_tasks(current_app.conf.beat_schedule)
    if not missing:
        return []
    return [
        _error(
            "W002",
            "django_celery_beat is not in INSTALLED_APPS and the Celery beat_schedule lacks "
            f"{', '.join(missing)}: nothing will sweep the outbox.",
            hint="pip install 'django-tiktok-tracking[beat]', add 'django_celery_beat' and run "
            "beat with its DatabaseScheduler; or, without it, set CELERY_BEAT_SCHEDULE = "
            "tiktok_tracking.schedule.beat_schedule(TIKTOK_TRACKING) and run beat.",
            warning=True,
        )
    ]


def _check_adapter():
    """E004 an adapter that cannot be imported or is no OrderAdapter; W004 a shop's own path
    that resolves to the base class itself (``shop.tracking.OrderAdapter``, where the module
    only imports it): the base class then reads the shop's orders, and nothing says so."""
    from tiktok_tracking.adapters import OrderAdapter

    adapter_path = conf.get("ORDER_ADAPTER")
    setting = f"{conf.SETTING_NAME}['ORDER_ADAPTER']"
    try:
        adapter = import_string(adapter_path)
    except ImportError as exc:
        return [_error("E004", f"{setting} cannot be imported: {exc}", hint=ADAPTER_HINT)]
    if not (isinstance(adapter, type) and issubclass(adapter, OrderAdapter)):
        return [
            _error(
                "E004",
                f"{setting} = {adapter_path!r} is not a subclass of {BASE_ADAPTER_PATH}.",
                hint=ADAPTER_HINT,
            )
        ]
    if adapter is OrderAdapter and adapter_path != BASE_ADAPTER_PATH:
        return [
            _error(
                "W004",
                f"{setting} = {adapter_path!r} is {BASE_ADAPTER_PATH} itself, imported there, "
                "not a subclass: your adapter's methods are never called.",
                hint="Name the class you defined (e.g. 'shop.tracking.ShopOrderAdapter'), not "
                "the base class it subclasses.",
                warning=True,
            )
        ]
    return []


def _check_events_api_client():
    """E020: EVENTS_API_CLIENT names a class with what delivery calls on a client."""
    path = conf.get("EVENTS_API_CLIENT")
    setting = f"{conf.SETTING_NAME}['EVENTS_API_CLIENT']"
    hint = (
        "Leave it unset (tiktok_tracking.client.EventsApiClient), or in tests set "
        "'tiktok_tracking.testing.RecordingClient'."
    )
    try:
        client_class = import_string(path)
    except ImportError as exc:
        return [_error("E020", f"{setting} cannot be imported: {exc}", hint=hint)]
    missing = [
        name
        for name in ("from_settings", "send", "send_encoded", "close")
        if not callable(getattr(client_class, name, None))
    ]
    if missing:
        return [
            _error(
                "E020",
                f"{setting} = {path!r} has no {', '.join(missing)}: delivery cannot use it.",
                hint=hint,
            )
        ]
    return []


def check_templates(app_configs=None, **kwargs):
    """W006: the template tags read the request from the context; without Django's request
    context processor every tag renders only an HTML comment."""
    from django.conf import settings

    engines = [
        engine
        for engine in getattr(settings, "TEMPLATES", ())
        if engine.get("BACKEND") == DJANGO_TEMPLATES
    ]
    if not engines or any(
        REQUEST_CONTEXT_PROCESSOR in engine.get("OPTIONS", {}).get("context_processors", ())
        for engine in engines
    ):
        return []
    return [
        _error(
            "W006",
            f"{REQUEST_CONTEXT_PROCESSOR} is not in any DjangoTemplates engine's "
            "context_processors: {% tiktok_pixel %}, {% tiktok_track %} and "
            "{% tiktok_purchase %} find no request and render only an HTML comment.",
            hint=f"Add '{REQUEST_CONTEXT_PROCESSOR}' to TEMPLATES[...]['OPTIONS']"
            "['context_processors'].",
            warning=True,
        )
    ]


def check_recent_orders(limit=RECENT_ORDERS, now=None):
    """W005, run by ``tiktok_check`` only (it reads the shop's orders): the latest paid orders
    read through ``ORDER_ADAPTER`` have contents whose price x quantity adds up to their value.

    An adapter that reads a line total as the unit price, or misses the quantity, sends every
    order's lines wrong while each value on its own looks fine. Shipping, fees and order-level
    discounts also make the two differ; the message says by how much, so a shop can tell.
    """
    from django.db.models import QuerySet

    from tiktok_tracking.adapters import clean_contents, clean_value, configured_adapter_class
    from tiktok_tracking.reconcile import paid_orders_source

    try:
        source = paid_orders_source()
        adapter_class = configured_adapter_class()
    except Exception:
        return []  # E004 and E016 report these
    if source is None:
        return []
    now = now or timezone.now()
    orders = source(now - timedelta(days=RECENT_ORDERS_DAYS), now)
    if isinstance(orders, QuerySet) and not orders.query.is_sliced:
        orders = orders.order_by("-pk")[:limit]
    else:
        orders = list(orders)[-limit:]
    messages = []
    for order in orders:
        adapter = adapter_class(order)
        try:
            order_id = adapter.order_id()
            value = clean_value(adapter.value())
            contents = clean_contents(adapter.contents())
        except InvalidOrderData:
            # The receiver records such an order as failed, with the reason.
            continue
        if not contents:
            continue
        lines_total = sum(item["price"] * item["quantity"] for item in contents)
        margin = CONTENTS_MARGIN_PER_LINE * len(contents)
        if abs(lines_total - value) > margin:
            messages.append(
                _error(
                    "W005",
                    f"Order {order_id}: its contents add up to {lines_total} (price x quantity "
                    f"of {len(contents)} line(s)), its value is {value}, read through "
                    f"{conf.SETTING_NAME}['ORDER_ADAPTER'] = {conf.get('ORDER_ADAPTER')!r}.",
                    hint="contents() must give each line's unit price and quantity; unless "
                    "shipping, fees or discounts explain the difference, fix the adapter.",
                    warning=True,
                )
            )
    return messages


def _check_pixels(user):
    """E001 no pixel, E002 a pixel without its token, E014 malformed PIXELS, E015 SITES without
    the sites framework."""
    try:
        configured = parse_pixels(user)
    except TikTokTrackingImproperlyConfigured as exc:
        return [_error("E014", str(exc), hint=PIXELS_HINT)]
    if not configured:
        return [
            _error(
                "E001",
                f"{conf.SETTING_NAME}['PIXEL_ID'] is not set.",
                hint="Set it to the pixel code from TikTok Events Manager (or list several "
                "pixels in PIXELS).",
            )
        ]
    errors = []
    for index, pixel in enumerate(configured):
        if not pixel.access_token:
            where = (
                "['ACCESS_TOKEN']"
                if user.get("PIXELS") is None
                else f"['PIXELS'][{index}]['ACCESS_TOKEN']"
            )
            errors.append(
                _error(
                    "E002",
                    f"{conf.SETTING_NAME}{where} is not set (pixel {pixel.pixel_id}).",
                    hint="Read it from the environment; never commit it.",
                )
            )
    if site_scoped(configured) and not apps.is_installed("django.contrib.sites"):
        errors.append(
            _error(
                "E015",
                f"{conf.SETTING_NAME}['PIXELS'] limits pixels to SITES, but django.contrib.sites "
                "is not installed.",
                hint="Add 'django.contrib.sites' to INSTALLED_APPS, or remove SITES.",
            )
        )
    return errors


def _check_funnel_events():
    """E017: SERVER_FUNNEL_EVENTS names TikTok events, and no purchase (recorded at checkout,
    before any payment, a purchase would be counted for orders never paid)."""
    events = conf.get("SERVER_FUNNEL_EVENTS")
    setting = f"{conf.SETTING_NAME}['SERVER_FUNNEL_EVENTS']"
    if isinstance(events, str) or not isinstance(events, (list, tuple)):
        return [_error("E017", f"{setting} must be a list of event names, not {events!r}.")]
    errors = []
    for event in events:
        if not is_valid_event_name(event):
            errors.append(_error("E017", f"{setting}: {event!r} is not a TikTok event name."))
        elif event in PURCHASE_EVENT_NAMES or event == conf.get("PURCHASE_EVENT"):
            errors.append(
                _error(
                    "E017",
                    f"{setting}: {event!r} is a purchase; capture_context records these events "
                    "at checkout, before the payment.",
                    hint="Purchases are sent by payment_completed.",
                )
            )
    return errors


def _check_paid_orders():
    """E016: PAID_ORDERS, when set, names a callable tiktok_reconcile can call."""
    from tiktok_tracking.reconcile import paid_orders_source

    try:
        paid_orders_source()
    except TikTokTrackingImproperlyConfigured as exc:
        return [
            _error(
                "E016",
                str(exc),
                hint="A dotted path to a callable (since, until) returning the shop's paid "
                "orders, for manage.py tiktok_reconcile.",
            )
        ]
    return []


def _check_numbers():
    errors = []
    batch_size = conf.get("BATCH_SIZE")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        errors.append(
            _error(
                "E006",
                f"{conf.SETTING_NAME}['BATCH_SIZE'] must be an integer from 1 to "
                f"{MAX_BATCH_SIZE}, not {batch_size!r}.",
            )
        )
    hours = conf.get("MAX_RETRY_HOURS")
    if not isinstance(hours, int | float) or not 0 < hours < DEDUP_WINDOW_HOURS:
        errors.append(
            _error(
                "E007",
                f"{conf.SETTING_NAME}['MAX_RETRY_HOURS'] must be above 0 and below "
                f"{DEDUP_WINDOW_HOURS} (TikTok's dedup window), not {hours!r}.",
            )
        )
    for key in (
        "TIMEOUT",
        "RETRY_BASE_DELAY",
        "RETRY_MAX_DELAY",
        "LEASE_SECONDS",
        "HEAL_INTERVAL",
        "HEAL_WINDOW_HOURS",
        "HEAL_GRACE_SECONDS",
    ):
        value = conf.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            errors.append(
                _error("E008", f"{conf.SETTING_NAME}[{key!r}] must be a positive number.")
            )
            return errors
    errors.extend(_check_lease())
    errors.extend(_check_outbox_retention())
    return errors


def _check_request_bytes():
    """E022: MAX_REQUEST_BYTES is a whole number of bytes above 0. W008: it is above the
    smallest limit known to stand between a shop and TikTok, so such a proxy would refuse the
    larger requests (each refusal is narrowed, at the cost of more requests)."""
    from tiktok_tracking.delivery import SMALLEST_KNOWN_BODY_LIMIT

    cap = conf.get("MAX_REQUEST_BYTES")
    setting = f"{conf.SETTING_NAME}['MAX_REQUEST_BYTES']"
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        return [_error("E022", f"{setting} must be a whole number of bytes above 0, not {cap!r}.")]
    if cap > SMALLEST_KNOWN_BODY_LIMIT:
        return [
            _error(
                "W008",
                f"{setting} = {cap:,} is above {SMALLEST_KNOWN_BODY_LIMIT:,} bytes, nginx's "
                "default client_max_body_size: a proxy on the way to TikTok that keeps it "
                "refuses larger requests with HTTP 413, and each is then sent again in halves.",
                hint=f"Leave it at the default ({conf.DEFAULTS['MAX_REQUEST_BYTES']:,}) unless "
                "every hop to TikTok is known to accept more.",
                warning=True,
            )
        ]
    return []


def _check_readiness():
    """E019: READINESS names known keys, markets of real countries, and sound thresholds."""
    from tiktok_tracking.readiness.markets import market_index
    from tiktok_tracking.readiness.verdict import WINDOWS

    try:
        values = conf.readiness_settings()
        conf.readiness_thresholds()
        if not isinstance(values["MARKETS"], Mapping):
            raise ValueError(
                f"READINESS['MARKETS'] must be a dict of market name to country codes, not "
                f"{type(values['MARKETS']).__name__}"
            )
        market_index(values["MARKETS"])
        if values["ALERT_WEBHOOK_URL"] and not values["ALERT_WEBHOOK_SECRET"]:
            raise ValueError(
                "READINESS['ALERT_WEBHOOK_URL'] is set without ALERT_WEBHOOK_SECRET: the "
                "webhook's alerts are signed with it, so that the receiver can trust them"
            )
        queue = values["ALERT_QUEUE"]
        if queue is not None and (not isinstance(queue, str) or not queue.strip()):
            raise ValueError(
                f"READINESS['ALERT_QUEUE'] must be a Celery queue's name, or None for Celery's "
                f"default queue, not {queue!r}"
            )
        if values["WINDOW_DAYS"] not in WINDOWS:
            raise ValueError(
                f"READINESS['WINDOW_DAYS'] must be one of {', '.join(map(str, WINDOWS))}, not "
                f"{values['WINDOW_DAYS']!r}"
            )
        interval = values["ASSESS_INTERVAL"]
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(
                f"READINESS['ASSESS_INTERVAL'] must be a whole number of seconds of at least 1, "
                f"not {interval!r}"
            )
    except (TikTokTrackingImproperlyConfigured, ValueError, TypeError) as exc:
        return [_error("E019", str(exc))]
    return []


def _check_outbox_retention():
    """E018: finished rows stay in the outbox as long as anything may still change them: a
    resend (TikTok's dedup window), a late browser receipt, the rollups of the last two days."""
    hours = conf.get("OUTBOX_RETENTION_HOURS")
    receipt_seconds = conf.get("RECEIPT_MAX_AGE_SECONDS")
    receipt_hours = receipt_seconds / 3600 if isinstance(receipt_seconds, int | float) else 0
    needed = max(DEDUP_WINDOW_HOURS, receipt_hours)
    if isinstance(hours, int | float) and not isinstance(hours, bool) and hours >= needed:
        return []
    return [
        _error(
            "E018",
            f"{conf.SETTING_NAME}['OUTBOX_RETENTION_HOURS'] must be a number of at least "
            f"{needed:g}, not {hours!r}: a finished row may still be resent within TikTok's "
            f"{DEDUP_WINDOW_HOURS} h dedup window, or receive its browser receipt within "
            f"RECEIPT_MAX_AGE_SECONDS, and both find it in the outbox only.",
        )
    ]


def _check_lease():
    """E009: the lease outlasts the longest a claimed batch's request can take to be answered
    and recorded, else every such request would be skipped (and the batch retried)."""
    from tiktok_tracking.delivery import IN_FLIGHT_BATCHES, RECORDING_MARGIN_SECONDS

    lease, timeout = conf.get("LEASE_SECONDS"), conf.get("TIMEOUT")
    # The worst case: a batch's request waits behind the one before it, each ending within
    # TIMEOUT (the whole request), then its answer is recorded.
    needed = IN_FLIGHT_BATCHES * timeout + RECORDING_MARGIN_SECONDS
    if lease > needed:
        return []
    return [
        _error(
            "E009",
            f"{conf.SETTING_NAME}['LEASE_SECONDS'] = {lease!r} must exceed {needed:g} s: a "
            f"claimed batch's request may wait behind the previous batch's ({IN_FLIGHT_BATCHES} "
            f"batches in flight, one request each), each ending within TIMEOUT ({timeout:g} s, "
            f"the whole request), and its answer needs {RECORDING_MARGIN_SECONDS:g} s to be "
            "recorded. A request the lease cannot cover is not sent but retried later; "
            "narrowing requests after a 40002 are sent only while the lease covers them.",
            hint="Raise LEASE_SECONDS or lower TIMEOUT.",
        )
    ]


def check_consent_settings(app_configs=None, **kwargs):
    from django.conf import settings

    errors = []
    policy = conf.get("UNKNOWN_COUNTRY_POLICY")
    if policy not in ("opt_in", "opt_out"):
        errors.append(
            _error(
                "E010",
                f"{conf.SETTING_NAME}['UNKNOWN_COUNTRY_POLICY'] must be 'opt_in' or 'opt_out', "
                f"not {policy!r}.",
            )
        )
    for key in ("CONSENT_OPT_IN_COUNTRIES", "CONSENT_LIMITED_DATA_USE_COUNTRIES"):
        codes = conf.get(key)
        bad = [c for c in codes if not (isinstance(c, str) and len(c) == 2 and c.isalpha())]
        if isinstance(codes, str) or bad:
            errors.append(
                _error(
                    "E011",
                    f"{conf.SETTING_NAME}[{key!r}] must be a list of ISO 3166-1 alpha-2 codes.",
                )
            )
    resolver = conf.get("COUNTRY_RESOLVER")
    if isinstance(resolver, str):
        try:
            import_string(resolver)
        except ImportError as exc:
            errors.append(
                _error(
                    "E012",
                    f"{conf.SETTING_NAME}['COUNTRY_RESOLVER'] cannot be imported: {exc}",
                )
            )
    try:
        for network in conf.get("TRUSTED_PROXIES"):
            ipaddress.ip_network(network, strict=False)
    except (TypeError, ValueError) as exc:
        errors.append(
            _error(
                "E013", f"{conf.SETTING_NAME}['TRUSTED_PROXIES'] is not a list of networks: {exc}"
            )
        )
    if MIDDLEWARE_PATH not in getattr(settings, "MIDDLEWARE", ()):
        errors.append(
            _error(
                "W003",
                f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: the ttclid of an ad click is not kept "
                "for a later purchase.",
                hint="Add it after SessionMiddleware.",
                warning=True,
            )
        )
    return errors


def check_broker(app_configs=None, **kwargs):
    """E005: the process publishes through the project's Celery app, and that app has a broker.

    Without an app of the project's, Celery falls back to an app of its own that reads none of
    the ``CELERY_*`` settings, yet takes ``CELERY_BROKER_URL`` from the environment: a broker URL
    alone therefore proves nothing.
    """
    from celery import current_app

    app = current_app._get_current_object()
    hint = (
        "Load your Celery app in your project's __init__.py (see the README's Celery app) and "
        "set CELERY_BROKER_URL."
    )
    if _is_celery_fallback_app(app):
        return [
            _error(
                "E005",
                "No Celery app of the project's is loaded: Celery's fallback app would publish "
                "the purchase events, ignoring the CELERY_* settings, and a worker started with "
                "celery -A yourproject would not share its configuration.",
                hint=hint,
            )
        ]
    if not app.conf.broker_url:
        return [
            _error(
                "E005",
                "No Celery broker is configured: purchase events would never be delivered.",
                hint=hint,
            )
        ]
    return _check_filesystem_broker(app)


def _check_filesystem_broker(app):
    """W007: kombu's own filesystem transport lets a worker read a message file before it is
    written, and die of it (tiktok_tracking.broker explains); the app ships a safe one."""
    from tiktok_tracking.broker import TRANSPORT_PATH

    url = app.conf.broker_url
    if not (isinstance(url, str) and url.startswith("filesystem:")):
        return []
    if app.conf.broker_transport == TRANSPORT_PATH:
        return []
    return [
        _error(
            "W007",
            "The broker is kombu's own filesystem transport, whose workers can read a message "
            "file before it is written and stop with JSONDecodeError.",
            hint=f"Set CELERY_BROKER_TRANSPORT = {TRANSPORT_PATH!r} beside "
            "CELERY_BROKER_URL = 'filesystem://'.",
            warning=True,
        )
    ]


def check_eager_tasks(app_configs=None, **kwargs):
    """W009: Celery runs the app's tasks eagerly, so the wake-up published after a payment
    commits runs the whole delivery, TikTok's answer included, inside the payment request."""
    from tiktok_tracking.tasks import deliver_events

    # The app the wake-up is published through, however the project configures it
    # (CELERY_TASK_ALWAYS_EAGER through config_from_object, or app.conf directly).
    if not deliver_events.app.conf.task_always_eager:
        return []
    longest = conf.get("DRAIN_SECONDS") + conf.get("TIMEOUT")
    return [
        _error(
            "W009",
            "Celery runs tasks eagerly (task_always_eager, CELERY_TASK_ALWAYS_EAGER = True): "
            "each payment request delivers its purchase to TikTok itself after commit, and "
            f"waits up to DRAIN_SECONDS + TIMEOUT ({longest:g} s) when TikTok is slow or hangs.",
            hint="Set CELERY_TASK_ALWAYS_EAGER = False and run a worker. Eager tasks are for "
            "tests and demos without a worker: silence tiktok_tracking.W009 there "
            "(SILENCED_SYSTEM_CHECKS).",
            warning=True,
        )
    ]


# The libpq parameters of docs/deployment.md ("Network partitions"), named in W010's hint.
PARTITION_OPTIONS = POSTGRES_OPTIONS
# Without these two, a broken link is noticed only by the kernel's defaults: the first probe
# after 2 h idle (tcp_keepalive_time), or some 15 minutes of retransmissions (tcp_retries2).
PARTITION_REQUIRED = ("keepalives_idle", "tcp_user_timeout")


def check_database_partitions(app_configs=None, **kwargs):
    """W010: the PostgreSQL database the outbox is written to has no keepalives or
    tcp_user_timeout in its OPTIONS, so a worker whose link to it breaks mid-statement waits on
    the kernel's defaults, minutes beyond the lease of the rows it claimed."""
    from django.db import connections, router

    from tiktok_tracking.models import TrackedEvent

    alias = router.db_for_write(TrackedEvent)
    if alias not in connections.settings:
        return []
    connection = connections[alias]
    return database_partition_warnings(
        alias, connection.vendor, connection.settings_dict.get("OPTIONS") or {}
    )


def database_partition_warnings(alias, vendor, options):
    """W010 for the database ``alias`` of ``vendor`` connected with ``options``, if it applies."""
    # A service file (pg_service.conf) may set them where the check cannot see.
    if vendor != "postgresql" or "service" in options:
        return []
    missing = [key for key in PARTITION_REQUIRED if key not in options]
    if str(options.get("keepalives", 1)) == "0":
        missing.insert(0, "keepalives (set to 0)")
    if not missing:
        return []
    lease = conf.get("LEASE_SECONDS")
    recommended = ", ".join(f'"{key}": {value}' for key, value in PARTITION_OPTIONS.items())
    return [
        _error(
            "W010",
            f"DATABASES[{alias!r}]['OPTIONS'] lacks {', '.join(missing)}: a worker whose link to "
            "PostgreSQL breaks mid-statement waits on the kernel's defaults (some 15 minutes of "
            "retransmissions, or 2 h before the first keepalive probe on a silent link) before "
            f"it notices, far beyond the {lease:g} s lease (LEASE_SECONDS) of the rows it "
            "claimed, and delivers nothing meanwhile.",
            hint=f"Add to the OPTIONS: {{{recommended}}} (docs/deployment.md, "
            '"Network partitions").',
            warning=True,
        )
    ]


def _is_celery_fallback_app(app):
    """Whether ``app`` is the one Celery creates when nothing else was: named "default", and
    without the fixups (Django's among them) every app a project creates gets."""
    return app.main == "default" and not app.fixups
