"""Who claimed an event last, and when: the worker's host name and pid beside the lease."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0009_config_change_alerts"),
    ]

    operations = [
        migrations.AddField(
            model_name="archivedevent",
            name="claimed_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="last claimed at"),
        ),
        migrations.AddField(
            model_name="archivedevent",
            name="claimed_by",
            field=models.CharField(
                blank=True,
                help_text="The worker's host name and process id, e.g. web-1:4242.",
                max_length=80,
                null=True,
                verbose_name="last claimed by",
            ),
        ),
        migrations.AddField(
            model_name="trackedevent",
            name="claimed_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="last claimed at"),
        ),
        migrations.AddField(
            model_name="trackedevent",
            name="claimed_by",
            field=models.CharField(
                blank=True,
                help_text="The worker's host name and process id, e.g. web-1:4242.",
                max_length=80,
                null=True,
                verbose_name="last claimed by",
            ),
        ),
    ]
