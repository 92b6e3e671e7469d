"""The test project's URLs with the django-payments shop and django-payments' callback view."""

from django.urls import include, path

from tests.payments_shop import views
from tests.urls import urlpatterns as project_urlpatterns

shop_patterns = [
    path("checkout/", views.checkout, name="checkout"),
    path("pay/<int:pk>/", views.pay, name="pay"),
    path("thanks/<int:pk>/", views.thanks, name="thanks"),
    path("orders/<str:number>/thanks/", views.order_thanks, name="order_thanks"),
    path("failed/<int:pk>/", views.failed, name="failed"),
]

urlpatterns = [
    *project_urlpatterns,
    path("payments/", include("payments.urls")),
    path("payment-shop/", include((shop_patterns, "payments_shop"))),
]
