"""Consent and receipt endpoints; a shop mounts them with ``include("tiktok_tracking.urls")``."""

from django.urls import path

from tiktok_tracking import views

app_name = "tiktok_tracking"

urlpatterns = [
    path("consent/", views.consent, name="consent"),
    path("receipt/", views.receipt, name="receipt"),
]
