"""The test shop's order admin, with the TikTok panel added in one line."""

from django.contrib import admin

from tests.shop.models import Order
from tiktok_tracking.admin import TikTokOrderAdminMixin


@admin.register(Order)
class OrderAdmin(TikTokOrderAdminMixin, admin.ModelAdmin):
    list_display = ("number", "total", "currency", "paid")
