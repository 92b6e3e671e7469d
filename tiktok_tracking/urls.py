"""The consent, receipt and readiness feed endpoints: ``include("tiktok_tracking.urls")``."""

from django.urls import path

from tiktok_tracking import views
from tiktok_tracking.readiness import feed

app_name = "tiktok_tracking"

urlpatterns = [
    path("consent/", views.consent, name="consent"),
    path("receipt/", views.receipt, name="receipt"),
    path("health/", feed.health, name="health"),
]
