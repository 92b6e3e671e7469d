"""The app's one exception family: configuration, order data and delivery errors."""

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


class EventsApiError(TikTokTrackingError):
    """The Events API did not accept a request. Carries what TikTok answered, never the token."""

    def __init__(self, outcome):
        self.outcome = outcome
        super().__init__(
            f"Events API {outcome.kind}: HTTP {outcome.http_status}, code {outcome.code}, "
            f"{outcome.message!r} (request_id {outcome.request_id or '-'}, "
            f"{outcome.event_count} event(s))"
        )


class TransientApiError(EventsApiError):
    """Worth retrying: rate limit, server error, timeout, connection error, unreadable answer."""


class PermanentApiError(EventsApiError):
    """Retrying the same payload cannot help: bad token, no permission, parameter error."""
