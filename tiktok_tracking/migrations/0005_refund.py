"""Refunds and cancellations the shop signals, kept on its side."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0004_delivery_answers"),
    ]

    operations = [
        migrations.CreateModel(
            name="Refund",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("order_id", models.CharField(max_length=128, verbose_name="order id")),
                ("event_id", models.CharField(max_length=255, verbose_name="purchase event id")),
                ("refund_key", models.CharField(max_length=64, verbose_name="refund key")),
                (
                    "amount",
                    models.DecimalField(decimal_places=6, max_digits=24, verbose_name="amount"),
                ),
                ("currency", models.CharField(max_length=3, verbose_name="currency")),
                ("full", models.BooleanField(default=False, verbose_name="the whole order")),
                (
                    "order_value",
                    models.DecimalField(
                        decimal_places=6,
                        help_text="The order's value when the refund was recorded.",
                        max_digits=24,
                        verbose_name="order value",
                    ),
                ),
                ("country", models.CharField(blank=True, max_length=2, verbose_name="country")),
                (
                    "refunded_at",
                    models.DateTimeField(
                        db_index=True, default=django.utils.timezone.now, verbose_name="refunded at"
                    ),
                ),
            ],
            options={
                "verbose_name": "refund",
                "verbose_name_plural": "refunds",
                "ordering": ["refunded_at", "pk"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("order_id", "refund_key"), name="tiktok_refund_once_per_key"
                    )
                ],
            },
        ),
    ]
