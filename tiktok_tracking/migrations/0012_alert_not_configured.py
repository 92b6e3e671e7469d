"""An alert raised with no webhook set reads "not configured", no longer "sent"."""

from django.db import migrations, models


def mark_unposted_alerts_not_configured(apps, schema_editor):
    # Before this release an alert raised with no webhook was stored "sent" with no attempt and
    # no time sent; a posted alert always has both. The table holds one row per verdict change.
    ReadinessAlert = apps.get_model("tiktok_tracking", "ReadinessAlert")
    ReadinessAlert.objects.filter(status="sent", attempts=0, sent_at__isnull=True).update(
        status="not_configured"
    )


def mark_not_configured_alerts_sent(apps, schema_editor):
    # The release before knows no "not configured": its alerts read "sent" again.
    ReadinessAlert = apps.get_model("tiktok_tracking", "ReadinessAlert")
    ReadinessAlert.objects.filter(status="not_configured").update(status="sent")


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0011_readiness_report_previous"),
    ]

    operations = [
        migrations.AlterField(
            model_name="readinessalert",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("sent", "Sent"),
                    ("failed", "Failed"),
                    ("not_configured", "Not configured"),
                ],
                default="pending",
                max_length=16,
                verbose_name="webhook",
            ),
        ),
        migrations.RunPython(
            mark_unposted_alerts_not_configured, mark_not_configured_alerts_sent, elidable=True
        ),
    ]
