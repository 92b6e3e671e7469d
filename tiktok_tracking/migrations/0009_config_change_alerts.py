"""Alerts of a change to the tracking configuration, beside the markets' readiness alerts."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0008_receipt_tallies"),
    ]

    operations = [
        migrations.AddField(
            model_name="readinessalert",
            name="kind",
            field=models.CharField(
                choices=[
                    ("readiness_changed", "Market readiness changed"),
                    ("config_changed", "Tracking configuration changed"),
                ],
                default="readiness_changed",
                max_length=32,
                verbose_name="kind",
            ),
        ),
        migrations.AddField(
            model_name="readinessreport",
            name="config_change_id",
            field=models.BigIntegerField(
                blank=True, null=True, verbose_name="configuration record"
            ),
        ),
        migrations.AlterField(
            model_name="readinessalert",
            name="market",
            field=models.CharField(blank=True, max_length=64, verbose_name="market"),
        ),
        migrations.AlterField(
            model_name="readinessalert",
            name="new",
            field=models.CharField(blank=True, max_length=32, verbose_name="verdict now"),
        ),
        migrations.AlterField(
            model_name="readinessalert",
            name="old",
            field=models.CharField(blank=True, max_length=32, verbose_name="verdict before"),
        ),
    ]
