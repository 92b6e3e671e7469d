"""The app's one exception family: configuration and order data errors.

Delivery raises nothing: what TikTok answered is an ``Outcome``, recorded on the row.
"""

from django.core.exceptions import ImproperlyConfigured


class TikTokTrackingError(Exception):
    """Base class of every error the app raises on purpose."""


class TikTokTrackingImproperlyConfigured(TikTokTrackingError, ImproperlyConfigured):
    """A ``TIKTOK_TRACKING`` setting is missing or invalid; the message names the key."""


class InvalidOrderData(TikTokTrackingError, ValueError):
    """An order adapter returned a value TikTok would reject; ``field`` names which one."""

    def __init__(self, field, message):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")
