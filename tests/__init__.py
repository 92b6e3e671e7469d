"""Test suite of django-tiktok-tracking."""

# Loaded here as a Django project loads its Celery app, so shared tasks bind to it.
from tests.celery_app import app as celery_app

__all__ = ["celery_app"]
