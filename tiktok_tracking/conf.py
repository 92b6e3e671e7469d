"""The one door to the ``TIKTOK_TRACKING`` setting: defaults, read at call time."""

from collections.abc import Mapping

from django.conf import settings

from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured

SETTING_NAME = "TIKTOK_TRACKING"

EVENTS_API_URL = "https://business-api.tiktok.com/open_api/v1.3/event/track/"
PIXEL_SCRIPT_URL = "https://analytics.tiktok.com/i18n/pixel/events.js"

# EU member states, the rest of the EEA (Iceland, Liechtenstein, Norway), the UK and Switzerland.
EU_EEA_UK_CH = (
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    "IS", "LI", "NO", "GB", "CH",
)  # fmt: skip

DEFAULTS = {
    # Identity of the pixel and the Events API credentials. The token's setting name contains
    # "TOKEN" so Django's error reporter masks it in debug pages and error mails.
    "PIXEL_ID": None,
    "ACCESS_TOKEN": None,
    "API_URL": EVENTS_API_URL,
    "PIXEL_SCRIPT_URL": PIXEL_SCRIPT_URL,
    "TEST_EVENT_CODE": None,
    # Several pixels instead of the three keys above: a list of dicts, each with its own
    # PIXEL_ID, ACCESS_TOKEN and TEST_EVENT_CODE, and optionally SITES (django.contrib.sites ids
    # whose events it receives; absent: every site). Every event goes to each pixel it concerns.
    "PIXELS": None,
    "PARTNER_NAME": None,
    # Both lanes read the purchase event's name from here so they cannot drift apart.
    "PURCHASE_EVENT": "Purchase",
    "ORDER_ADAPTER": "tiktok_tracking.adapters.OrderAdapter",
    # Server lane switch: False records nothing and sends nothing.
    "ENABLED": True,
    # Delivery.
    "BATCH_SIZE": 1000,
    # The largest request body sent, in bytes: a batch is cut into requests within it. Below the
    # smallest limit known on the way to TikTok (nginx's default, 1 MiB; TikTok documents none),
    # above a full batch of typical purchases (docs/settings.md has the figures).
    "MAX_REQUEST_BYTES": 1_000_000,
    "TIMEOUT": 10.0,
    "RETRY_BASE_DELAY": 30.0,
    "RETRY_MAX_DELAY": 3600.0,
    "MAX_RETRY_HOURS": 24,
    "LEASE_SECONDS": 120,
    "DRAIN_SECONDS": 30,
    "SWEEP_INTERVAL": 60,
    # Publish the "deliver now" task from a background thread, so that a slow or unreachable
    # broker never holds up the request that recorded the event (the sweeper is the fallback).
    "ENQUEUE_IN_BACKGROUND": True,
    # Privacy: raw ip and user agent are blanked this many days after delivery or failure.
    "RETENTION_DAYS": 7,
    # Finished rows (delivered, failed, suppressed) move from the outbox to the archive this
    # long after their last change, so the outbox holds in-flight and recent rows only. At
    # least TikTok's 48 h dedup window: a row can be resent only while it is in the outbox.
    "OUTBOX_RETENTION_HOURS": 72,
    # A read replica's alias in DATABASES for the app's reports (with replica.ReplicaRouter in
    # DATABASE_ROUTERS), and how long a report waits for it to catch up before it reads anyway
    # and says so.
    "REPLICA_DATABASE": None,
    "REPLICA_MAX_WAIT": 0.5,
    # Consent. Opt-in countries (EU/EEA, UK, Switzerland) send nothing without a grant; other
    # countries send unless the visitor denies; a denial in a limited-data-use country (US state
    # privacy laws) sends with limited_data_use instead. A visitor whose country is unknown is
    # treated as UNKNOWN_COUNTRY_POLICY says ("opt_in" is the safe choice under GDPR).
    "CONSENT_OPT_IN_COUNTRIES": EU_EEA_UK_CH,
    "CONSENT_LIMITED_DATA_USE_COUNTRIES": ("US",),
    "UNKNOWN_COUNTRY_POLICY": "opt_in",
    "CONSENT_POLICY_VERSION": "1",
    # Where the visitor's country comes from: a callable path (request -> "DE" or None), and/or a
    # request header set by a trusted edge (e.g. "HTTP_CF_IPCOUNTRY").
    "COUNTRY_RESOLVER": None,
    "COUNTRY_HEADER": None,
    # Client ip: REMOTE_ADDR unless the request came through one of these proxies, in which case
    # the right-most untrusted address of X-Forwarded-For is used.
    "TRUSTED_PROXIES": (),
    # How long the ttclid from a TikTok ad click is kept in a first-party cookie.
    "TTCLID_COOKIE_DAYS": 28,
    # Server-lane events recorded besides the purchase (same event_id as the browser's).
    "SERVER_FUNNEL_EVENTS": ("InitiateCheckout",),
    # How long a browser receipt token stays valid.
    "RECEIPT_MAX_AGE_SECONDS": 2 * 24 * 3600,
    # The shop's paid orders, for tiktok_reconcile: a dotted path to a callable
    # (since, until) -> iterable of orders, each read through ORDER_ADAPTER. Only the shop knows
    # which orders were paid; without it the command reports recorded purchases only.
    "PAID_ORDERS": None,
    # The scan of recently paid orders (PAID_ORDERS) that records any purchase the outbox never
    # got, every HEAL_INTERVAL seconds: orders paid in the last HEAL_WINDOW_HOURS, but not in
    # the last HEAL_GRACE_SECONDS, whose events may still be on their way into the outbox.
    "HEAL_INTERVAL": 300,
    "HEAL_WINDOW_HOURS": 6,
    "HEAL_GRACE_SECONDS": 600,
    # What talks to the Events API: a dotted path to a class like client.EventsApiClient. A
    # shop's tests set "tiktok_tracking.testing.RecordingClient" to record instead of send.
    "EVENTS_API_CLIENT": "tiktok_tracking.client.EventsApiClient",
    # Rule readiness (tiktok_health): MARKETS groups countries ({"DACH": ["DE", "AT", "CH"]};
    # a country in no group is a market of its own), WINDOW_DAYS is the window (1, 7 or 30)
    # a market's verdict is read from, and the thresholds of the verdict rules, by name
    # (readiness.verdict.Thresholds, upper-case): only the keys set here change.
    "READINESS": {},
}


def readiness_defaults():
    """The READINESS keys and their defaults: the markets, the window, each threshold."""
    from dataclasses import fields

    from tiktok_tracking.readiness.verdict import Thresholds

    thresholds = {field.name.upper(): field.default for field in fields(Thresholds)}
    return {
        "MARKETS": {},
        "WINDOW_DAYS": 7,
        "ASSESS_INTERVAL": 300,
        "ALERT_MAIL": True,
        "ALERT_WEBHOOK_URL": None,
        "ALERT_WEBHOOK_SECRET": None,
        # The Celery queue of the task that posts the alerts (tiktok_tracking.deliver_alerts);
        # None is Celery's default queue, which a worker started without -Q consumes.
        "ALERT_QUEUE": None,
        **thresholds,
    }


def readiness_settings():
    """READINESS with its defaults filled in; an unknown key is an error naming it."""
    given = get("READINESS")
    if not isinstance(given, Mapping):
        raise TikTokTrackingImproperlyConfigured(
            f"{SETTING_NAME}['READINESS'] must be a dict, not {type(given).__name__}."
        )
    defaults = readiness_defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TikTokTrackingImproperlyConfigured(
            f"{SETTING_NAME}['READINESS'] has unknown key(s) {', '.join(unknown)}; known: "
            f"{', '.join(defaults)}."
        )
    return {**defaults, **given}


def readiness_thresholds():
    """The verdict rules' thresholds from READINESS (a ValueError names a bad one)."""
    from dataclasses import fields

    from tiktok_tracking.readiness.verdict import Thresholds

    values = readiness_settings()
    return Thresholds(**{field.name: values[field.name.upper()] for field in fields(Thresholds)})


def user_settings():
    """The shop's ``TIKTOK_TRACKING`` dict (empty if it has none)."""
    return getattr(settings, SETTING_NAME, None) or {}


def get(name):
    """The value of one key, the shop's if set, else the default."""
    if name not in DEFAULTS:
        raise KeyError(f"{SETTING_NAME} has no key {name!r}")
    return user_settings().get(name, DEFAULTS[name])


def require(name):
    """Like :func:`get`, but a missing or empty value raises an error naming the key."""
    value = get(name)
    if value in (None, ""):
        raise TikTokTrackingImproperlyConfigured(
            f"{SETTING_NAME}[{name!r}] is required but not set."
        )
    return value


def _token_state(token):
    return "set" if token else "not set"


def _public_pixels(entries):
    """``PIXELS`` with each token reduced to whether it is set; anything malformed only named
    by its type, since it may hold a token where one was not expected."""
    if not isinstance(entries, (list, tuple)):
        return f"<invalid: {type(entries).__name__}>"
    return [
        {**entry, "ACCESS_TOKEN": _token_state(entry.get("ACCESS_TOKEN"))}
        if isinstance(entry, Mapping)
        else f"<invalid: {type(entry).__name__}>"
        for entry in entries
    ]


def public_settings():
    """The effective settings with the access token reduced to whether it is set."""
    values = {key: get(key) for key in DEFAULTS}
    values["ACCESS_TOKEN"] = _token_state(values["ACCESS_TOKEN"])
    if isinstance(values["READINESS"], Mapping) and "ALERT_WEBHOOK_SECRET" in values["READINESS"]:
        values["READINESS"] = {
            **values["READINESS"],
            "ALERT_WEBHOOK_SECRET": _token_state(values["READINESS"]["ALERT_WEBHOOK_SECRET"]),
        }
    if values["PIXELS"] is not None:
        values["PIXELS"] = _public_pixels(values["PIXELS"])
    # Callables (a COUNTRY_RESOLVER given as a function) are recorded by name.
    return {
        key: (f"{value.__module__}.{value.__qualname__}" if callable(value) else value)
        for key, value in values.items()
    }
