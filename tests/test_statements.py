"""The checkout's own INSERT and SELECT write and read exactly what the ORM would."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Model
from django.forms.models import model_to_dict
from django.utils import timezone

from tiktok_tracking import statements
from tiktok_tracking.models import BrowserReceipt, CheckoutContext, TrackedEvent

pytestmark = pytest.mark.django_db

CONTEXT = {
    "order_id": "S1",
    "ttclid": "E.C.P.click",
    "ttp": "ttp-cookie",
    "ip": "2001:db8::7",
    "user_agent": "Mozilla/5.0",
    "page_url": "https://shop.example/checkout/",
    "referrer": "",
    "locale": "de-DE",
    "visitor_id": "v-1",
    "consent_status": "granted",
    "country": "DE",
    "limited_data_use": True,
}


def as_stored(row: Model):
    """Every field of ``row`` as the database has it now."""
    return model_to_dict(type(row).objects.get(pk=row.pk))


def test_this_database_is_supported():
    # Both CI databases take the fast path; a test that skipped it would prove nothing.
    assert statements.supported(connection.alias)


def test_an_insert_stores_what_the_orm_would():
    now = timezone.now()
    values = {
        "pixel_id": "CPIXEL",
        "event": "Purchase",
        "event_id": "order_S1",
        "order_id": "S1",
        "payload": {"event": "Purchase", "properties": {"value": 12.5, "contents": []}},
        "event_time": now,
        "next_attempt_at": now,
        "country": "DE",
        "match_keys": 5,
    }
    inserted = statements.insert(TrackedEvent, values, using=connection.alias, now=now)
    by_orm = TrackedEvent.objects.create(**{**values, "event_id": "order_S2"})
    stored, expected = as_stored(inserted), as_stored(by_orm)
    for name in ("id", "event_id"):
        stored.pop(name), expected.pop(name)
    assert stored == expected
    # The instance returned is the row, as the ORM's would be.
    assert inserted.pk and not inserted._state.adding
    assert model_to_dict(inserted, exclude=["browser_seen_at"]) == {
        key: value for key, value in as_stored(inserted).items() if key != "browser_seen_at"
    }
    assert TrackedEvent.objects.get(pk=inserted.pk).created_at == now


def test_a_computed_column_comes_from_the_database_and_stays_deferred():
    seen = timezone.now() - timedelta(minutes=3)
    BrowserReceipt.objects.create(
        pixel_id="CPIXEL", event="Purchase", event_id="order_S3", received_at=seen
    )
    now = timezone.now()
    subquery = '(SELECT "received_at" FROM "tiktok_tracking_browserreceipt" WHERE "event_id" = %s)'
    row = statements.insert(
        TrackedEvent,
        {
            "pixel_id": "CPIXEL",
            "event": "Purchase",
            "event_id": "order_S3",
            "order_id": "S3",
            "payload": {},
            "event_time": now,
        },
        using=connection.alias,
        now=now,
        computed={"browser_seen_at": (subquery, ["order_S3"])},
    )
    assert "browser_seen_at" in row.get_deferred_fields()
    assert row.browser_seen_at == seen  # loaded on first read


def test_an_ignored_conflict_keeps_the_first_row_and_the_transaction():
    now = timezone.now()
    with transaction.atomic():
        first = statements.insert(
            CheckoutContext, CONTEXT, using=connection.alias, now=now, ignore_conflicts=False
        )
        again = statements.insert(
            CheckoutContext,
            {**CONTEXT, "ttclid": "other"},
            using=connection.alias,
            now=now,
            ignore_conflicts=True,
        )
        assert again is None
        # Still usable: the conflict did not abort the transaction.
        assert CheckoutContext.objects.get(pk=first.pk).ttclid == "E.C.P.click"


def test_a_select_converts_each_value_as_the_orm_does():
    CheckoutContext.objects.create(**CONTEXT)
    names = tuple(name for name in CONTEXT if name != "order_id")
    read = statements.select_one(CheckoutContext, names, "order_id", "S1", using=connection.alias)
    assert read == CheckoutContext.objects.filter(order_id="S1").values(*names).get()
    assert read["limited_data_use"] is True
    assert read["ip"] == "2001:db8::7"
    assert (
        statements.select_one(CheckoutContext, names, "order_id", "nope", using=connection.alias)
        is None
    )
