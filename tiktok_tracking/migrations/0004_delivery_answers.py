"""The attempt log in two tables: one row per answer, one narrow row per event naming it."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

ANSWER_FIELDS = (
    "attempted_at",
    "outcome",
    "batch_size",
    "http_status",
    "code",
    "message",
    "request_id",
    "duration_ms",
)
CHUNK = 2000


def log_answers_apart(apps, schema_editor):
    """Give every logged attempt an answer row: attempts with the same answer share one."""
    DeliveryAttempt = apps.get_model("tiktok_tracking", "DeliveryAttempt")
    DeliveryAnswer = apps.get_model("tiktok_tracking", "DeliveryAnswer")
    answers = {}
    last_pk = 0
    while True:
        chunk = list(
            DeliveryAttempt.objects.filter(pk__gt=last_pk)
            .order_by("pk")
            .values_list("pk", *ANSWER_FIELDS)[:CHUNK]
        )
        if not chunk:
            return
        by_answer = {}
        for pk, *fields in chunk:
            fields = tuple(fields)
            if fields not in answers:
                answers[fields] = DeliveryAnswer.objects.create(
                    **dict(zip(ANSWER_FIELDS, fields, strict=True))
                ).pk
            by_answer.setdefault(answers[fields], []).append(pk)
        for answer_pk, attempt_pks in by_answer.items():
            DeliveryAttempt.objects.filter(pk__in=attempt_pks).update(answer_id=answer_pk)
        last_pk = chunk[-1][0]


class Migration(migrations.Migration):
    dependencies = [
        ("tiktok_tracking", "0003_lean_outbox_and_archive"),
    ]

    operations = [
        migrations.CreateModel(
            name="DeliveryAnswer",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "attempted_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, verbose_name="attempted at"
                    ),
                ),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("delivered", "Delivered"),
                            ("transient", "Transient error"),
                            ("permanent", "Permanent error"),
                        ],
                        max_length=16,
                        verbose_name="outcome",
                    ),
                ),
                ("batch_size", models.PositiveIntegerField(verbose_name="events in the request")),
                (
                    "http_status",
                    models.PositiveSmallIntegerField(
                        blank=True, null=True, verbose_name="HTTP status"
                    ),
                ),
                ("code", models.IntegerField(blank=True, null=True, verbose_name="TikTok code")),
                ("message", models.TextField(blank=True, verbose_name="message")),
                (
                    "request_id",
                    models.CharField(blank=True, max_length=128, verbose_name="request id"),
                ),
                (
                    "duration_ms",
                    models.PositiveIntegerField(default=0, verbose_name="duration (ms)"),
                ),
            ],
            options={
                "verbose_name": "delivery answer",
                "verbose_name_plural": "delivery answers",
                "ordering": ["attempted_at", "pk"],
            },
        ),
        migrations.AddField(
            model_name="deliveryattempt",
            name="answer",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="attempts",
                to="tiktok_tracking.deliveryanswer",
                verbose_name="answer",
            ),
        ),
        migrations.RunPython(log_answers_apart, migrations.RunPython.noop, elidable=True),
        *(
            migrations.RemoveField(model_name="deliveryattempt", name=name)
            for name in ANSWER_FIELDS
        ),
        migrations.AlterField(
            model_name="deliveryattempt",
            name="answer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="attempts",
                to="tiktok_tracking.deliveryanswer",
                verbose_name="answer",
            ),
        ),
        migrations.AlterModelOptions(
            name="deliveryattempt",
            options={
                "ordering": ["pk"],
                "verbose_name": "delivery attempt",
                "verbose_name_plural": "delivery attempts",
            },
        ),
    ]
