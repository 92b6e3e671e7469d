"""Refunds are capped per order: what each asked and took, its number, whether the order was paid.

Expand only: the new columns are nullable, or keep their default in the database, so the
release before goes on inserting refunds while this runs and until it restarts. The refunds recorded before are numbered,
their amounts kept as what they asked for and capped in order against what the order's earlier
refunds left, in batches of orders each in its own transaction.
"""

from decimal import Decimal

from django.db import migrations, models, transaction

ORDERS_PER_BATCH = 500


def number_and_cap_earlier_refunds(apps, schema_editor):
    Refund = apps.get_model("tiktok_tracking", "Refund")
    event_tables = [
        apps.get_model("tiktok_tracking", name) for name in ("TrackedEvent", "ArchivedEvent")
    ]
    alias = schema_editor.connection.alias
    order_ids = sorted(
        Refund.objects.using(alias)
        .filter(sequence__isnull=True)
        .order_by()
        .values_list("order_id", flat=True)
        .distinct()
    )
    for start in range(0, len(order_ids), ORDERS_PER_BATCH):
        batch = order_ids[start : start + ORDERS_PER_BATCH]
        with transaction.atomic(using=alias):
            refunds = list(
                Refund.objects.using(alias)
                .select_for_update()
                .filter(order_id__in=batch)
                .order_by("order_id", "pk")
            )
            # A refund's event_id is its order's purchase: recorded means the order was paid.
            event_ids = {refund.event_id for refund in refunds}
            recorded = set()
            for model in event_tables:
                recorded.update(
                    model.objects.using(alias)
                    .filter(event_id__in=event_ids)
                    .values_list("event_id", flat=True)
                )
            changed = []
            order_value = taken = None
            previous_order = None
            number = 0
            for refund in refunds:
                if refund.order_id != previous_order:
                    previous_order, order_value, taken, number = (
                        refund.order_id,
                        refund.order_value,
                        Decimal(0),
                        0,
                    )
                number += 1
                if refund.sequence is not None:
                    # Recorded by this release while the batch waited: already capped.
                    taken += refund.amount
                    number = max(number, refund.sequence)
                    continue
                refund.requested = refund.amount
                refund.amount = min(refund.amount, max(order_value - taken, Decimal(0)))
                refund.order_value = order_value
                refund.order_paid = refund.event_id in recorded
                refund.sequence = number
                taken += refund.amount
                changed.append(refund)
            Refund.objects.using(alias).bulk_update(
                changed, ["requested", "amount", "order_value", "order_paid", "sequence"]
            )


class AddFieldKeepingItsDefault(migrations.AddField):
    """``AddField`` whose NOT NULL column keeps its default in PostgreSQL itself.

    Django adds such a column with its default, then drops the default: the release before,
    whose INSERTs do not name the column, would fail every refund from then until it restarts.
    Here the column is added with its default in one statement and the default stays; a later
    release may drop it once every process names the column.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            # An online upgrade is a PostgreSQL matter; elsewhere Django's way.
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        field = model._meta.get_field(self.name)
        table = schema_editor.quote_name(model._meta.db_table)
        column = schema_editor.quote_name(field.column)
        default = schema_editor.quote_value(schema_editor.effective_default(field))
        schema_editor.execute(
            f"ALTER TABLE {table} ADD COLUMN {column} "
            f"{field.db_type(schema_editor.connection)} DEFAULT {default} NOT NULL"
        )


def restore_asked_amounts(apps, schema_editor):
    # The release before knows one amount a refund: what it asked for.
    Refund = apps.get_model("tiktok_tracking", "Refund")
    Refund.objects.using(schema_editor.connection.alias).filter(requested__isnull=False).update(
        amount=models.F("requested")
    )


class Migration(migrations.Migration):
    # Each batch of orders commits on its own: no long transaction over the refunds table.
    atomic = False

    dependencies = [
        ("tiktok_tracking", "0012_alert_not_configured"),
    ]

    operations = [
        AddFieldKeepingItsDefault(
            model_name="refund",
            name="order_paid",
            field=models.BooleanField(default=False, verbose_name="order known as paid"),
        ),
        migrations.AddField(
            model_name="refund",
            name="requested",
            field=models.DecimalField(
                blank=True, decimal_places=6, max_digits=24, null=True, verbose_name="amount asked"
            ),
        ),
        migrations.AddField(
            model_name="refund",
            name="sequence",
            field=models.PositiveIntegerField(blank=True, null=True, verbose_name="refund number"),
        ),
        migrations.AlterField(
            model_name="refund",
            name="amount",
            field=models.DecimalField(
                decimal_places=6,
                help_text="What the refund takes back: what was asked, within what was left.",
                max_digits=24,
                verbose_name="amount",
            ),
        ),
        migrations.AlterField(
            model_name="refund",
            name="order_value",
            field=models.DecimalField(
                decimal_places=6,
                help_text="The order's value when its first refund was recorded.",
                max_digits=24,
                verbose_name="order value",
            ),
        ),
        migrations.RunPython(number_and_cap_earlier_refunds, restore_asked_amounts),
        migrations.AddConstraint(
            model_name="refund",
            constraint=models.UniqueConstraint(
                fields=("order_id", "sequence"), name="tiktok_refund_one_per_number"
            ),
        ),
    ]
