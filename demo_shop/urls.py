"""URLs of the demo shop: the store, the fake payment gateway, TikTok's endpoints, the admin."""

from django.contrib import admin
from django.urls import include, path

from demo_shop.store import views

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("products/<str:sku>/", views.product, name="product"),
    path("cart/", views.cart, name="cart"),
    path("cart/add/", views.add_to_cart, name="add_to_cart"),
    path("cart/clear/", views.clear_cart, name="clear_cart"),
    path("checkout/", views.checkout, name="checkout"),
    path("checkout/pay/<str:number>/", views.handoff, name="handoff"),
    path("checkout/return/<str:number>/", views.checkout_return, name="checkout_return"),
    path("thanks/<str:number>/", views.thanks, name="thanks"),
    path("country/", views.set_country, name="set_country"),
    path("gateway/pay/<str:token>/", views.gateway_pay, name="gateway_pay"),
    path("gateway/webhook/", views.gateway_webhook, name="gateway_webhook"),
    path("tiktok/", include("tiktok_tracking.urls")),
    path("admin/", admin.site.urls),
]
