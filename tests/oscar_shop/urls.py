"""URLs of the oscar test shop: oscar's storefront and checkout, and the app's endpoints."""

from django.apps import apps
from django.urls import include, path

from tests.oscar_shop.views import PaymentDetailsView

urlpatterns = [
    path("i18n/", include("django.conf.urls.i18n")),
    path("tiktok/", include("tiktok_tracking.urls")),
    # The shop's own payment step, where oscar's "checkout:preview" would be.
    path("checkout/preview/", PaymentDetailsView.as_view(preview=True)),
    path("", include(apps.get_app_config("oscar").urls[0])),
]
