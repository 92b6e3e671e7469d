"""Rule readiness: the stored reports the feed serves, and its consumers' tokens."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0005_refund"),
    ]

    operations = [
        migrations.CreateModel(
            name="FeedToken",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="Who reads the feed with it.", max_length=100, verbose_name="name"
                    ),
                ),
                (
                    "token_hash",
                    models.CharField(
                        editable=False, max_length=64, unique=True, verbose_name="token hash"
                    ),
                ),
                (
                    "hint",
                    models.CharField(editable=False, max_length=8, verbose_name="begins with"),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, editable=False, verbose_name="created at"
                    ),
                ),
                (
                    "revoked_at",
                    models.DateTimeField(
                        blank=True, editable=False, null=True, verbose_name="revoked at"
                    ),
                ),
            ],
            options={
                "verbose_name": "feed token",
                "verbose_name_plural": "feed tokens",
                "ordering": ["-created_at", "-pk"],
            },
        ),
        migrations.CreateModel(
            name="ReadinessReport",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "computed_at",
                    models.DateTimeField(
                        db_index=True, default=django.utils.timezone.now, verbose_name="computed at"
                    ),
                ),
                ("document", models.JSONField(verbose_name="document")),
            ],
            options={
                "verbose_name": "readiness report",
                "verbose_name_plural": "readiness reports",
                "get_latest_by": ["computed_at", "pk"],
            },
        ),
    ]
