"""The one door to the ``TIKTOK_TRACKING`` setting: defaults, read at call time."""

from django.conf import settings

from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured

SETTING_NAME = "TIKTOK_TRACKING"

EVENTS_API_URL = "https://business-api.tiktok.com/open_api/v1.3/event/track/"
PIXEL_SCRIPT_URL = "https://analytics.tiktok.com/i18n/pixel/events.js"

DEFAULTS = {
    # Identity of the pixel and the Events API credentials. The token's setting name contains
    # "TOKEN" so Django's error reporter masks it in debug pages and error mails.
    "PIXEL_ID": None,
    "ACCESS_TOKEN": None,
    "API_URL": EVENTS_API_URL,
    "PIXEL_SCRIPT_URL": PIXEL_SCRIPT_URL,
    "TEST_EVENT_CODE": None,
    "PARTNER_NAME": None,
    # Both lanes read the purchase event's name from here so they cannot drift apart.
    "PURCHASE_EVENT": "Purchase",
    "ORDER_ADAPTER": "tiktok_tracking.adapters.OrderAdapter",
    # Server lane switch: False records nothing and sends nothing.
    "ENABLED": True,
    # Delivery.
    "BATCH_SIZE": 1000,
    "TIMEOUT": 10.0,
    "RETRY_BASE_DELAY": 30.0,
    "RETRY_MAX_DELAY": 3600.0,
    "MAX_RETRY_HOURS": 24,
    "LEASE_SECONDS": 120,
    "DRAIN_SECONDS": 30,
    "SWEEP_INTERVAL": 60,
    # Privacy: raw ip and user agent are blanked this many days after delivery or failure.
    "RETENTION_DAYS": 7,
}


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
