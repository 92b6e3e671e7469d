"""Each readiness report names the one it was compared with, once: two runs never both alert."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0010_claimed_by_and_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="readinessreport",
            name="previous",
            field=models.OneToOneField(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="next_report",
                to="tiktok_tracking.readinessreport",
                verbose_name="compared with",
            ),
        ),
    ]
