"""The store's admin; the order page shows the order's TikTok events and verdicts."""

from django.contrib import admin

from demo_shop.store.models import Order, OrderLine, Product
from tiktok_tracking.admin import TikTokOrderAdminMixin


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price", "currency", "colour")
    search_fields = ("sku", "name")


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    fields = ("sku", "name", "quantity", "price")
    readonly_fields = fields


@admin.register(Order)
class OrderAdmin(TikTokOrderAdminMixin, admin.ModelAdmin):
    list_display = ("number", "email", "country", "total", "currency", "status", "created")
    list_filter = ("status", "country", "currency")
    search_fields = ("number", "email")
    readonly_fields = ("created", "paid_at")
    inlines = [OrderLineInline]
