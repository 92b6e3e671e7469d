"""The pixels events go to: one from ``PIXEL_ID``, or several from ``PIXELS``, each with a token."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tiktok_tracking import conf
from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured

# What one entry of PIXELS may say.
PIXEL_KEYS = ("PIXEL_ID", "ACCESS_TOKEN", "TEST_EVENT_CODE", "SITES")
# The single-pixel keys, which PIXELS replaces.
SINGLE_PIXEL_KEYS = ("PIXEL_ID", "ACCESS_TOKEN", "TEST_EVENT_CODE")


@dataclass(frozen=True)
class Pixel:
    """One TikTok pixel: its code, its Events API token and test code, and the sites it tracks."""

    pixel_id: str
    # Never in a repr: reprs end up in logs and tracebacks.
    access_token: str | None = field(default=None, repr=False)
    test_event_code: str | None = None
    # Site ids (django.contrib.sites) whose events this pixel receives; empty: every site.
    sites: frozenset = frozenset()

    def tracks_site(self, site_id):
        return not self.sites or site_id in self.sites


def parse_pixels(user_settings) -> tuple:
    """The pixels a ``TIKTOK_TRACKING`` dict configures, in its order (pure).

    ``PIXELS`` (a list of dicts) when set, else one pixel from ``PIXEL_ID``, ``ACCESS_TOKEN`` and
    ``TEST_EVENT_CODE``; empty when neither names a pixel. A malformed ``PIXELS`` raises an
    error naming the entry and the key.
    """
    entries = user_settings.get("PIXELS")
    if entries is None:
        pixel_id = user_settings.get("PIXEL_ID")
        if pixel_id in (None, ""):
            return ()
        return (
            Pixel(
                str(pixel_id),
                user_settings.get("ACCESS_TOKEN") or None,
                user_settings.get("TEST_EVENT_CODE") or None,
            ),
        )
    both = [key for key in SINGLE_PIXEL_KEYS if user_settings.get(key) not in (None, "")]
    if both:
        raise _error(
            f"PIXELS replaces {', '.join(both)}: set each pixel's keys inside PIXELS, not both."
        )
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
        raise _error(f"PIXELS must be a list of dicts, not {type(entries).__name__}.")
    pixels, seen = [], set()
    for index, entry in enumerate(entries):
        pixel = _parse_entry(f"PIXELS[{index}]", entry)
        if pixel.pixel_id in seen:
            raise _error(f"PIXELS[{index}]: pixel {pixel.pixel_id!r} is listed twice.")
        seen.add(pixel.pixel_id)
        pixels.append(pixel)
    if not pixels:
        raise _error("PIXELS is empty: list at least one pixel, or leave PIXELS unset.")
    return tuple(pixels)


def _parse_entry(where, entry):
    if not isinstance(entry, Mapping):
        raise _error(f"{where} must be a dict, not {type(entry).__name__}.")
    unknown = sorted(str(key) for key in entry if key not in PIXEL_KEYS)
    if unknown:
        raise _error(f"{where} has unknown keys {', '.join(unknown)}; use {', '.join(PIXEL_KEYS)}.")
    pixel_id = entry.get("PIXEL_ID")
    if not isinstance(pixel_id, str) or not pixel_id.strip():
        raise _error(f"{where}['PIXEL_ID'] must be the pixel code, a non-empty string.")
    for key in ("ACCESS_TOKEN", "TEST_EVENT_CODE"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            # Only the type: the value may be a secret.
            raise _error(f"{where}[{key!r}] must be a string, not {type(entry[key]).__name__}.")
    sites = entry.get("SITES") or ()
    if (
        isinstance(sites, (str, bytes, Mapping))
        or not isinstance(sites, Iterable)
        or not all(isinstance(site, int) and not isinstance(site, bool) for site in sites)
    ):
        raise _error(f"{where}['SITES'] must be a list of site ids (integers), got {sites!r}.")
    return Pixel(
        pixel_id,
        entry.get("ACCESS_TOKEN") or None,
        entry.get("TEST_EVENT_CODE") or None,
        frozenset(sites),
    )


def _error(message):
    return TikTokTrackingImproperlyConfigured(f"{conf.SETTING_NAME}: {message}")


def configured_pixels() -> tuple:
    """Every configured pixel (read at call time, like every setting)."""
    return parse_pixels(conf.user_settings())


def require_pixels() -> tuple:
    """Like :func:`configured_pixels`, but none configured is an error saying what to set."""
    pixels = configured_pixels()
    if not pixels:
        raise _error("no pixel is configured: set PIXEL_ID (one pixel) or PIXELS (several).")
    return pixels


def configured_tokens():
    """Every access token in the settings, even where they are malformed, to redact them."""
    user = conf.user_settings()
    entries = user.get("PIXELS")
    tokens = [user.get("ACCESS_TOKEN")]
    if isinstance(entries, (list, tuple)):
        tokens += [entry.get("ACCESS_TOKEN") for entry in entries if isinstance(entry, Mapping)]
    return [token for token in tokens if isinstance(token, str) and token]


def named_pixel(pixels, pixel_id):
    """The pixel of ``pixels`` whose code is ``pixel_id``; an error saying it is not configured."""
    for pixel in pixels:
        if pixel.pixel_id == pixel_id:
            return pixel
    raise TikTokTrackingImproperlyConfigured(
        f"Pixel {pixel_id} is not configured (PIXEL_ID or PIXELS)."
    )


def pixels_for_site(pixels, site_id):
    """Those of ``pixels`` that track site ``site_id`` (None: the site is unknown)."""
    return tuple(pixel for pixel in pixels if pixel.tracks_site(site_id))


def site_scoped(pixels):
    """True if any pixel is limited to some sites, so that the site must be known."""
    return any(pixel.sites for pixel in pixels)


def current_site_id(request=None):
    """The django.contrib.sites id of ``request`` (or ``SITE_ID`` without one); None if unknown."""
    from django.apps import apps

    if not apps.is_installed("django.contrib.sites"):
        return None
    from django.contrib.sites.models import Site
    from django.core.exceptions import ImproperlyConfigured

    try:
        # Cached by the sites framework after the first lookup of each host or SITE_ID.
        return Site.objects.get_current(request).pk
    except (Site.DoesNotExist, ImproperlyConfigured):
        return None


def pixels_for_request(request):
    """The pixels that track the site ``request`` came to (all of them if none is site-scoped)."""
    pixels = configured_pixels()
    if not site_scoped(pixels):
        return pixels
    return pixels_for_site(pixels, current_site_id(request))
