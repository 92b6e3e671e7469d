"""URLs of the test project: the admin and the test shop's checkout."""

from django.contrib import admin
from django.urls import include, path

from tests.shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", views.home, name="home"),
    path("checkout/", views.checkout, name="checkout"),
    path("pay/<str:number>/", views.pay, name="pay"),
    path("thanks/<str:number>/", views.thanks, name="thanks"),
    path("tiktok/", include("tiktok_tracking.urls")),
]
