"""The pytest plugin of ``tiktok_tracking.testing``: the ``tiktok_recorder`` fixture.

Installed with the package (the ``pytest11`` entry point), so a shop's test suite has the
fixture without importing anything; it needs pytest-django's ``settings`` fixture.
"""

try:
    import pytest
except ImportError as exc:  # imported on its own, outside a pytest run
    raise ImportError(
        "The tiktok_recorder fixture needs pytest and pytest-django: "
        'pip install "django-tiktok-tracking[testing]"'
    ) from exc


@pytest.fixture
def tiktok_recorder(settings):
    """TikTok replaced by the recording client for one test, its record empty at the start."""
    from tiktok_tracking import testing

    tracking = dict(getattr(settings, testing.SETTING_NAME, None) or {})
    tracking["EVENTS_API_CLIENT"] = testing.RECORDING_CLIENT
    setattr(settings, testing.SETTING_NAME, tracking)
    testing.reset()
    yield testing.Recorder()
    testing.reset()
