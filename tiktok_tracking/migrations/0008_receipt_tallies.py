"""Funnel receipts with a random event_id, counted per day rather than stored one by one."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tiktok_tracking', '0007_readiness_alerts'),
    ]

    operations = [
        migrations.CreateModel(
            name='ReceiptTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField(verbose_name='day')),
                ('pixel_id', models.CharField(max_length=64, verbose_name='pixel id')),
                ('event', models.CharField(max_length=64, verbose_name='event')),
                ('receipts', models.PositiveIntegerField(default=0, verbose_name='receipts')),
            ],
            options={
                'verbose_name': 'receipt tally',
                'verbose_name_plural': 'receipt tallies',
                'constraints': [models.UniqueConstraint(fields=('day', 'pixel_id', 'event'), name='tiktok_tracking_one_tally_a_day')],
            },
        ),
    ]
