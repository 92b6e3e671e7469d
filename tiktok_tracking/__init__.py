"""TikTok Pixel and Events API conversion tracking for Django shops."""

__version__ = "0.1.0"

__all__ = ["__version__", "capture_context"]


def capture_context(request, order):
    """Store the browser context of ``order`` so a later webhook still sends it.

    Imported lazily so that ``import tiktok_tracking`` works before Django's apps are ready.
    """
    from tiktok_tracking.recording import capture_context as _capture_context

    return _capture_context(request, order)
