"""Erasure of one shopper's personal data (API and tiktok_erase) and the purge of the archive."""

import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client
from django.utils import timezone

from tests.factories import outbox_rows
from tests.shop.models import Order
from tiktok_tracking import archive, delivery, rollups
from tiktok_tracking.client import DELIVERED, Outcome
from tiktok_tracking.erasure import (
    ERASED,
    ERASED_TEXT,
    erase_personal_data,
    erasure_keys,
    scrubbed,
)
from tiktok_tracking.hashing import sha256_hex
from tiktok_tracking.models import (
    ArchivedEvent,
    BrowserReceipt,
    CheckoutContext,
    ConsentRecord,
    DeliveryAnswer,
    Refund,
    TrackedEvent,
)
from tiktok_tracking.receipts import receipt_token
from tiktok_tracking.resend import NO_PAYLOAD, resend_events
from tiktok_tracking.signals import order_refunded, payment_completed
from tiktok_tracking.visitor import VISITOR_COOKIE

Status = TrackedEvent.Status
PIXEL = "CTESTPIXEL0001"

EMAIL = "Jane.Doe@Example.com"
PHONE = "0151 2345 6789"  # typed nationally, on a German order
PHONE_E164 = "+4915123456789"
CUSTOMER_ID = "cust-7781"
IP = "81.2.69.160"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0 jane"
TTCLID = "E.C.P.jane-click-0123456789abcdef"
TTP = "ttp-jane-0123456789abcdef"

OTHER_EMAIL = "someone.else@example.org"
OTHER_IP = "81.2.69.192"
OTHER_USER_AGENT = "Mozilla/5.0 (Macintosh) Safari/605.1.15 other"

# The column types that can hold a value of the shopper's.
TEXT_TYPES = {
    "CharField",
    "TextField",
    "JSONField",
    "GenericIPAddressField",
    "EmailField",
    "URLField",
    "SlugField",
}


def shopper_values(visitor_id):
    """Every form of the shopper's personal data that must not be left anywhere."""
    return {
        "raw email": EMAIL,
        "normalised email": EMAIL.lower(),
        "email digest": sha256_hex(EMAIL.lower()),
        "raw phone": PHONE,
        "E.164 phone": PHONE_E164,
        "phone digest": sha256_hex(PHONE_E164),
        "customer id digest": sha256_hex(CUSTOMER_ID),
        "ip": IP,
        "user agent": USER_AGENT,
        "ttclid": TTCLID,
        "_ttp": TTP,
        "visitor id": visitor_id,
    }


def leftovers(values):
    """``[(table.column, what)]`` of every text, char and JSON column of every model of the
    app that still holds one of ``values``."""
    found = []
    for model in apps.get_app_config("tiktok_tracking").get_models():
        columns = [
            field.attname
            for field in model._meta.concrete_fields
            if field.get_internal_type() in TEXT_TYPES
        ]
        if not columns:
            continue
        for row in model.objects.values_list(*columns):
            for column, value in zip(columns, row, strict=True):
                if value is None:
                    continue
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                found += [
                    (f"{model.__name__}.{column}", what)
                    for what, needle in values.items()
                    if needle in text
                ]
    return sorted(set(found))


def shopper_client():
    client = Client(REMOTE_ADDR=IP, HTTP_USER_AGENT=USER_AGENT)
    client.cookies["country"] = "DE"
    return client


def checkout(client, number, email=EMAIL, phone=PHONE):
    response = client.post(
        "/checkout/", {"number": number, "email": email, "phone": phone, "country": "DE"}
    )
    assert response.status_code == 200
    # The test shop's checkout takes no customer id; the shop's order has one.
    Order.objects.filter(number=number).update(customer_id=CUSTOMER_ID)


def pay(client, number):
    assert client.post(f"/pay/{number}/").status_code == 200


def refund(number):
    with transaction.atomic():
        order_refunded.send(sender=Order, order=Order.objects.get(number=number))


def post_receipt(client, event_id):
    token = receipt_token(PIXEL, "Purchase", event_id)
    response = client.post(
        "/tiktok/receipt/", json.dumps({"token": token}), content_type="text/plain"
    )
    assert response.status_code == 201


def age(model, order_id, hours):
    """Make the order's rows ``hours`` older, as time passing would."""
    model.objects.filter(order_id=order_id).update(
        updated_at=timezone.now() - timedelta(hours=hours)
    )


@pytest.fixture
def shopper(sandbox):
    """A German shopper who granted consent, came from an ad and bought three times: E1
    delivered, refunded, its receipt in, then archived; E2 refused by TikTok with an answer
    quoting her user agent and phone digest; E3 still waiting. Another shopper's O1 waits too.
    Returns her visitor id."""
    client = shopper_client()
    client.get("/")
    visitor_id = client.cookies[VISITOR_COOKIE].value
    assert client.post("/tiktok/consent/", {"status": "granted"}).status_code == 200
    client.get(f"/?ttclid={TTCLID}")
    client.cookies["_ttp"] = TTP

    checkout(client, "E1")
    pay(client, "E1")
    delivery.deliver_due_events()
    post_receipt(client, "order_E1")
    refund("E1")

    checkout(client, "E2")
    pay(client, "E2")
    sandbox.program(
        [
            {
                "code": 40002,
                "message": f"data.0.user.phone: {sha256_hex(PHONE_E164)} unknown for {USER_AGENT}",
            }
        ]
    )
    delivery.deliver_due_events()

    age(TrackedEvent, "E1", 24 * 4)
    assert archive.archive_finished() == 1

    checkout(client, "E3")
    pay(client, "E3")

    other = Client(REMOTE_ADDR=OTHER_IP, HTTP_USER_AGENT=OTHER_USER_AGENT)
    other.cookies["country"] = "US"
    other.post("/checkout/", {"number": "O1", "email": OTHER_EMAIL, "country": "US"})
    pay(other, "O1")

    # Every kind of row is there, with her data in it.
    assert ArchivedEvent.objects.get(order_id="E1").status == Status.DELIVERED
    assert TrackedEvent.objects.get(order_id="E2").status == Status.FAILED
    assert TrackedEvent.objects.get(order_id="E3").status == Status.PENDING
    assert CheckoutContext.objects.filter(visitor_id=visitor_id).count() == 3
    assert ConsentRecord.objects.filter(visitor_id=visitor_id).exists()
    assert Refund.objects.filter(order_id="E1").exists()
    assert BrowserReceipt.objects.filter(event_id="order_E1").exists()
    assert USER_AGENT in DeliveryAnswer.objects.get(code=40002).message
    rollups.rebuild_days([timezone.localdate()])
    found = {what for _, what in leftovers(shopper_values(visitor_id))}
    assert found >= {"email digest", "phone digest", "customer id digest", "ip", "user agent"}
    assert found >= {"ttclid", "_ttp", "visitor id"}
    return visitor_id


KEYS = {
    "email": {"email": "  JANE.doe@example.COM "},
    "phone typed nationally": {"phone": PHONE, "country": "DE"},
    "phone in E.164": {"phone": "+49 151 2345 6789"},
    "external id": {"external_id": CUSTOMER_ID},
    "one order": {"order_id": "E2"},
}


@pytest.mark.django_db
@pytest.mark.parametrize("key", KEYS)
def test_erasure_by_each_key_leaves_none_of_the_shoppers_data_in_any_column(shopper, key):
    report = erase_personal_data(**KEYS[key])

    assert leftovers(shopper_values(shopper)) == []
    tables = report.tables
    assert (tables["TrackedEvent"].matched, tables["TrackedEvent"].blanked) == (2, 2)
    assert (tables["ArchivedEvent"].matched, tables["ArchivedEvent"].blanked) == (1, 1)
    assert tables["CheckoutContext"].blanked == 3
    assert tables["ConsentRecord"].deleted == 1
    assert tables["Refund"].kept == 1
    assert tables["BrowserReceipt"].kept == 1
    assert tables["DeliveryAnswer"].blanked == 1
    assert tables["DailyRollup"].blanked == 1
    assert (report.orders, report.visitors, report.suppressed) == (3, 1, 1)
    # The other shopper's rows are untouched.
    other = TrackedEvent.objects.get(order_id="O1")
    assert other.payload["user"]["email"] == sha256_hex(OTHER_EMAIL)
    assert other.payload["user"]["ip"] == OTHER_IP
    assert CheckoutContext.objects.get(order_id="O1").user_agent == OTHER_USER_AGENT


@pytest.mark.django_db
def test_erased_rows_keep_their_order_figures_and_are_never_sent_resent_or_recorded_again(
    shopper, sandbox
):
    erase_personal_data(email=EMAIL)

    rows = {
        row.order_id: row for model in (TrackedEvent, ArchivedEvent) for row in model.objects.all()
    }
    # What the order was and what became of it stays; the personal data does not.
    assert {order: rows[order].status for order in ("E1", "E2", "E3")} == {
        "E1": Status.DELIVERED,
        "E2": Status.SUPPRESSED,
        "E3": Status.SUPPRESSED,
    }
    for order in ("E1", "E2", "E3"):
        row = rows[order]
        assert (row.payload, row.visitor_id, row.suppressed_reason) == ({}, "", ERASED)
        assert (row.event, row.event_id, row.country) == ("Purchase", f"order_{order}", "DE")
        assert row.personal_data_purged_at is not None
        # Not a placeholder (failed, no payload), which recording would rebuild in full.
        assert row.status != Status.FAILED
    assert rows["E2"].last_code == 40002
    assert ERASED_TEXT in rows["E2"].last_message

    # The waiting event is never sent; the other shopper's is.
    sandbox.reset()
    delivery.deliver_due_events()
    assert [event["event_id"] for event in sandbox.events()] == ["order_O1"]
    # Neither resent (no payload) nor recorded again by a repeated signal.
    report = resend_events(TrackedEvent.objects.filter(order_id__in=["E2", "E3"]))
    assert (report.requeued, report.refused[NO_PAYLOAD]) == (0, 2)
    with transaction.atomic():
        payment_completed.send(sender=Order, order=Order.objects.get(number="E3"))
    assert TrackedEvent.objects.get(order_id="E3").payload == {}
    assert leftovers(shopper_values(shopper)) == []


@pytest.mark.django_db
def test_the_paid_order_scan_does_not_record_an_erased_purchase_again(shopper):
    healing = pytest.importorskip("tiktok_tracking.healing")
    erase_personal_data(phone=PHONE_E164)

    # After the scan's grace period, every order of the shop is in its window.
    healing.record_missing_purchases(now=timezone.now() + timedelta(hours=1))

    assert TrackedEvent.objects.filter(order_id__in=["E1", "E2", "E3"]).count() == 2
    assert leftovers(shopper_values(shopper)) == []


@pytest.mark.django_db
def test_an_event_being_sent_when_it_is_erased_stays_suppressed_whatever_the_answer(shopper):
    claimed = [row for row in delivery.claim_due_events(10) if row.event_id == "order_E3"]
    assert len(claimed) == 1
    erase_personal_data(order_id="E3")

    answer = Outcome(DELIVERED, 200, 0, "OK", "req", event_count=1)
    delivery.record_outcome(claimed, answer, delivery.DrainReport())

    row = TrackedEvent.objects.get(order_id="E3")
    assert (row.status, row.suppressed_reason, row.payload) == (Status.SUPPRESSED, ERASED, {})


@pytest.mark.django_db
def test_a_dry_run_counts_and_changes_nothing(shopper):
    before = leftovers(shopper_values(shopper))

    report = erase_personal_data(external_id=CUSTOMER_ID, dry_run=True)

    assert report.dry_run and report.tables["TrackedEvent"].blanked == 2
    assert report.tables["ConsentRecord"].deleted == 1
    assert leftovers(shopper_values(shopper)) == before
    assert TrackedEvent.objects.get(order_id="E3").status == Status.PENDING


@pytest.mark.django_db
def test_consent_records_can_be_kept_as_proof_of_consent(shopper):
    report = erase_personal_data(email=EMAIL, keep_consent_records=True)

    assert report.tables["ConsentRecord"].kept == 1
    assert ConsentRecord.objects.filter(visitor_id=shopper).exists()
    values = shopper_values(shopper)
    del values["visitor id"]
    assert leftovers(values) == []


@pytest.mark.django_db
def test_tiktok_erase_erases_and_prints_and_logs_counts_never_the_values(shopper, caplog):
    out = StringIO()
    call_command("tiktok_erase", "--email", EMAIL, "--dry-run", stdout=out)
    assert "Would erase the personal data of 3 order(s) and 1 visitor(s)" in out.getvalue()
    assert TrackedEvent.objects.get(order_id="E3").status == Status.PENDING

    out = StringIO()
    with caplog.at_level(logging.INFO, logger="tiktok_tracking.erasure"):
        call_command("tiktok_erase", "--phone", PHONE, "--country", "DE", stdout=out)
    printed = out.getvalue() + caplog.text
    assert "TikTok erasure: 3 order(s), 1 visitor(s): 8 row(s) blanked, 1 deleted" in caplog.text
    assert "tracked events: 2 found, 2 blanked" in printed
    assert "archived events: 1 found, 1 blanked" in printed
    assert "consent records: 1 found, 1 deleted" in printed
    assert "refunds: 1 found, 1 kept (no personal data)" in printed
    assert "1 event(s) still waiting to be sent are suppressed: never sent." in printed
    assert not [what for what, value in shopper_values(shopper).items() if value in printed]
    assert leftovers(shopper_values(shopper)) == []

    # Run again by an order: its rows are found by their order id and blanked again, but no
    # longer lead to her visitor id or her other orders.
    out = StringIO()
    call_command("tiktok_erase", "--order", "E1", stdout=out)
    assert "Erased the personal data of 1 order(s) and 0 visitor(s):" in out.getvalue()


@pytest.mark.django_db
def test_tiktok_erase_refuses_no_key_and_keys_that_are_not_one_without_quoting_them():
    with pytest.raises(CommandError, match="at least one"):
        call_command("tiktok_erase")
    with pytest.raises(CommandError, match="not an email address") as caught:
        call_command("tiktok_erase", "--email", "jane-at-example")
    assert "jane-at-example" not in str(caught.value)
    with pytest.raises(CommandError, match="not a possible number") as caught:
        call_command("tiktok_erase", "--phone", "0151 2345 6789")  # national, no country
    assert "2345" not in str(caught.value)
    out = StringIO()
    call_command("tiktok_erase", "--email", "nobody@example.com", stdout=out)
    assert out.getvalue().strip() == "Nothing found: no row of the app carries these keys."


def test_keys_are_normalised_and_hashed_as_the_payload_builder_does():
    keys = erasure_keys(email=" Jane@Example.COM ", phone="(415) 555-2671", country="US")
    assert keys.digests == {
        "email": sha256_hex("jane@example.com"),
        "phone": sha256_hex("+14155552671"),
    }
    assert {"jane@example.com", "+14155552671", "(415) 555-2671"} <= keys.raw_values
    digest = sha256_hex("x@example.com").upper()
    assert erasure_keys(email=digest).digests == {"email": digest.lower()}
    assert erasure_keys(order_id=[1007, " 1008 "]).order_ids == {"1007", "1008"}


def test_scrubbing_replaces_each_value_and_keeps_the_rest_of_the_text():
    needles = sorted([USER_AGENT, IP], key=len, reverse=True)
    text = f"data.0.user.ip: {IP} refused for {USER_AGENT}."
    assert scrubbed(text, needles) == f"data.0.user.ip: {ERASED_TEXT} refused for {ERASED_TEXT}."
    assert scrubbed("", needles) == ""


@pytest.mark.django_db
def test_the_purge_blanks_raw_ip_and_user_agent_in_the_archive(sandbox):
    """Rows move to the archive after OUTBOX_RETENTION_HOURS (72 h), before the purge of their
    raw ip and user agent is due (RETENTION_DAYS, 7 d): the purge must reach them there."""
    client = shopper_client()
    client.post("/tiktok/consent/", {"status": "granted"})
    checkout(client, "P1")
    pay(client, "P1")
    delivery.deliver_due_events()
    age(TrackedEvent, "P1", 24 * 4)
    assert archive.archive_finished() == 1
    archived = ArchivedEvent.objects.get(order_id="P1")
    assert (archived.payload["user"]["ip"], archived.payload["user"]["user_agent"]) == (
        IP,
        USER_AGENT,
    )
    assert "page" in archived.payload

    # Not yet due: the raw values stay until RETENTION_DAYS after the row's last change.
    delivery.purge_personal_data()
    assert ArchivedEvent.objects.get(order_id="P1").personal_data_purged_at is None
    delivery.purge_personal_data(now=timezone.now() + timedelta(days=7, hours=1))

    archived = ArchivedEvent.objects.get(order_id="P1")
    assert "ip" not in archived.payload["user"]
    assert "user_agent" not in archived.payload["user"]
    assert "page" not in archived.payload
    assert archived.personal_data_purged_at is not None
    # What TikTok matched on besides stays, as in the outbox.
    assert archived.payload["user"]["email"] == sha256_hex(EMAIL.lower())
    assert leftovers({"ip": IP, "user agent": USER_AGENT}) == []


PAYLOADS = [
    {
        "event": "Purchase",
        "user": {"email": "e" * 64, "ip": IP, "user_agent": USER_AGENT, "ttclid": TTCLID},
        "page": {"url": "https://shop.example/checkout/", "referrer": "https://ads.example/"},
        "properties": {"value": 89.99, "currency": "EUR"},
    },
    {"event": "Purchase", "user": {"ip": IP}},
    {"event": "Purchase", "page": {"url": "https://shop.example/"}},
    {"event": "Purchase", "user": {}},
    {},
    [],
]


@pytest.mark.django_db
def test_the_database_purges_each_payload_as_without_raw_personal_data_does():
    rows = outbox_rows(len(PAYLOADS), prefix="shape")
    for row, payload in zip(rows, PAYLOADS, strict=True):
        TrackedEvent.objects.filter(pk=row.pk).update(
            payload=payload,
            status=Status.DELIVERED,
            updated_at=timezone.now() - timedelta(days=30),
        )

    assert delivery.purge_personal_data() == len(PAYLOADS)

    purged = [TrackedEvent.objects.get(pk=row.pk).payload for row in rows]
    assert purged == [delivery.without_raw_personal_data(payload) for payload in PAYLOADS]
    assert purged[0]["user"] == {"email": "e" * 64, "ttclid": TTCLID}
    assert "page" not in purged[0] and purged[0]["properties"] == PAYLOADS[0]["properties"]
