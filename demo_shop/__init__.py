"""The demo shop project; its Celery app is loaded with Django, as ``shared_task`` needs."""

from demo_shop.celery import app as celery_app

__all__ = ["celery_app"]
