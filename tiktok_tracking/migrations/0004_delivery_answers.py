"""The attempt log in two tables: one row per answer, one narrow row per event naming it.

Online: the previous release's workers keep writing attempts their way while it runs, and
until they restart. So this migration only expands (docs/deployment.md, "Upgrading"): the
answers' table, and each attempt's answer, nullable; the existing log moved in chunks of its
own transaction each; the old columns kept in the database, nullable, for the old workers'
INSERTs, and gone only from the models. A later release drops them and makes the answer
required, once every worker runs this one.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models, transaction

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
    """Give every logged attempt an answer row: attempts with the same answer share one.

    Each chunk commits on its own (the migration is not atomic): no lock is held for longer
    than one chunk, and an attempt the old workers log meanwhile is moved by a later chunk.
    """
    DeliveryAttempt = apps.get_model("tiktok_tracking", "DeliveryAttempt")
    DeliveryAnswer = apps.get_model("tiktok_tracking", "DeliveryAnswer")
    alias = schema_editor.connection.alias
    answers = {}
    last_pk = 0
    while True:
        with transaction.atomic(using=alias):
            chunk = list(
                DeliveryAttempt.objects.using(alias)
                .filter(pk__gt=last_pk, answer__isnull=True)
                .order_by("pk")
                .values_list("pk", *ANSWER_FIELDS)[:CHUNK]
            )
            if not chunk:
                return
            by_answer = {}
            for pk, *fields in chunk:
                fields = tuple(fields)
                if fields not in answers:
                    answers[fields] = (
                        DeliveryAnswer.objects.using(alias)
                        .create(**dict(zip(ANSWER_FIELDS, fields, strict=True)))
                        .pk
                    )
                by_answer.setdefault(answers[fields], []).append(pk)
            for answer_pk, attempt_pks in by_answer.items():
                DeliveryAttempt.objects.using(alias).filter(pk__in=attempt_pks).update(
                    answer_id=answer_pk
                )
        last_pk = chunk[-1][0]


def old_column(name):
    """The attempt log's column ``name`` as the previous release made it, but nullable: its
    workers still fill it, and this release's leave it empty."""
    fields = {
        "attempted_at": models.DateTimeField(null=True, verbose_name="attempted at"),
        "outcome": models.CharField(max_length=16, null=True, verbose_name="outcome"),
        "batch_size": models.PositiveIntegerField(null=True, verbose_name="events in the request"),
        "message": models.TextField(blank=True, null=True, verbose_name="message"),
        "request_id": models.CharField(
            blank=True, max_length=128, null=True, verbose_name="request id"
        ),
        "duration_ms": models.PositiveIntegerField(null=True, verbose_name="duration (ms)"),
    }
    return fields[name]


# Of ANSWER_FIELDS, the columns the previous release made NOT NULL (http_status and code
# are nullable already).
REQUIRED_BEFORE = ("attempted_at", "outcome", "batch_size", "message", "request_id", "duration_ms")


class Migration(migrations.Migration):
    # Each statement and each chunk of the data move commits on its own (see above).
    atomic = False

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
        # The old columns leave the models, not the database: the previous release's workers
        # insert into them until they restart.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterField(
                    model_name="deliveryattempt", name=name, field=old_column(name)
                )
                for name in REQUIRED_BEFORE
            ],
            state_operations=[
                migrations.RemoveField(model_name="deliveryattempt", name=name)
                for name in ANSWER_FIELDS
            ],
        ),
        # Required in the models; nullable in the database until a later release, since an
        # old worker's attempt has none until it is moved.
        migrations.SeparateDatabaseAndState(
            state_operations=[
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
            ],
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
