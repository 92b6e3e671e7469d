"""Readiness alerts: each change of a market's verdict, and its delivery to the webhook."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0006_readiness_reports_and_feed_tokens"),
    ]

    operations = [
        migrations.CreateModel(
            name="ReadinessAlert",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        db_index=True, default=django.utils.timezone.now, verbose_name="created at"
                    ),
                ),
                ("market", models.CharField(max_length=64, verbose_name="market")),
                ("old", models.CharField(max_length=32, verbose_name="verdict before")),
                ("new", models.CharField(max_length=32, verbose_name="verdict now")),
                ("reasons", models.JSONField(default=list, verbose_name="reasons")),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "Pending"), ("sent", "Sent"), ("failed", "Failed")],
                        default="pending",
                        max_length=16,
                        verbose_name="webhook",
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0, verbose_name="attempts")),
                (
                    "next_attempt_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, verbose_name="next attempt at"
                    ),
                ),
                ("sent_at", models.DateTimeField(blank=True, null=True, verbose_name="sent at")),
                ("last_error", models.TextField(blank=True, verbose_name="last error")),
            ],
            options={
                "verbose_name": "readiness alert",
                "verbose_name_plural": "readiness alerts",
                "ordering": ["-created_at", "-pk"],
            },
        ),
    ]
