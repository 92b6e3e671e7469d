"""What crosses into the app (cookies, headers, URLs, adapter values) never costs a checkout.

Regression tests for the audit's defects 2, 3, 9 and 11. Run on PostgreSQL as well (the CI's
second pass): SQLite neither enforces column lengths nor refuses NUL characters.
"""

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from tests.shop.models import Order
from tiktok_tracking.admin import masked_payload
from tiktok_tracking.delivery import purge_personal_data
from tiktok_tracking.events import BrowserContext
from tiktok_tracking.models import CheckoutContext, ConsentRecord, TrackedEvent
from tiktok_tracking.receipts import receipt_token
from tiktok_tracking.recording import record_order_event
from tiktok_tracking.visitor import TTCLID_COOKIE, VISITOR_COOKIE

PIXEL = "CTESTPIXEL0001"
EMAIL = "jane.doe@example.com"
PHONE = "+14155552671"


def us_client(**cookies):
    client = Client()
    client.cookies["country"] = "US"
    for name, value in cookies.items():
        client.cookies[name] = value
    return client


def stored_text(*models):
    """Every text value of every row of ``models``, JSON fields as their JSON text."""
    texts = []
    for model in models:
        for row in model.objects.values():
            texts.extend(
                json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else str(value)
                for value in row.values()
            )
    return "\n".join(texts)


# Defect 2: a long visitor cookie --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("length", [65, 200, 512])
def test_long_visitor_cookie_keeps_the_checkout_and_the_purchase(length):
    client = us_client(**{VISITOR_COOKIE: "v" * length, TTCLID_COOKIE: "c" * 512})
    number = f"LONG{length}"

    assert client.post("/checkout/", {"number": number}).status_code == 200
    assert client.post("/tiktok/consent/", {"status": "granted"}).status_code == 200
    assert client.post(f"/pay/{number}/").status_code == 200

    row = TrackedEvent.objects.get(event_id=f"order_{number}")
    assert row.status == TrackedEvent.Status.PENDING
    # A cookie this app could not have set is replaced by a fresh id, the same everywhere.
    assert row.visitor_id and len(row.visitor_id) <= 64
    assert CheckoutContext.objects.get(order_id=number).visitor_id == row.visitor_id
    assert ConsentRecord.objects.get().visitor_id == row.visitor_id
    assert row.payload["user"]["ttclid"] == "c" * 512


@pytest.mark.parametrize(
    "cookie",
    ["", "v" * 65, "has space", "ümlaut", "a\x00b", "../etc", "a;b"],
)
def test_a_visitor_cookie_this_app_did_not_issue_gets_a_fresh_id(rf, cookie):
    from tiktok_tracking.visitor import read_visitor

    request = rf.get("/")
    request.COOKIES[VISITOR_COOKIE] = cookie
    visitor = read_visitor(request)
    assert visitor.is_new and visitor.visitor_id != cookie and len(visitor.visitor_id) <= 64


def test_every_text_is_cut_to_its_column_and_made_storable():
    from tiktok_tracking.boundaries import fit_fields

    fitted = fit_fields(
        TrackedEvent,
        {
            "visitor_id": "v" * 300,
            "last_request_id": "r\x00" * 200,
            "suppressed_reason": "\ud800" * 300,
            "last_error": "e" * 10_000,
            "attempts": 3,
        },
    )
    assert fitted["visitor_id"] == "v" * 64
    assert fitted["last_request_id"] == "r" * 128
    assert len(fitted["suppressed_reason"]) == 255
    fitted["suppressed_reason"].encode("utf-8")
    assert fitted["last_error"] == "e" * 10_000  # a TextField has no length to cut to
    assert fitted["attempts"] == 3


# Defect 3: bad adapter data ------------------------------------------------------------------


@pytest.fixture
def default_adapter(settings):
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "ORDER_ADAPTER": "tiktok_tracking.adapters.OrderAdapter",
    }


def order_with_line_name(name, number):
    line = SimpleNamespace(sku="SKU-1", name=name, quantity=1, price=Decimal("9.99"))
    return SimpleNamespace(
        order_id=number, total=Decimal("9.99"), currency="USD", items=[line], country="US"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["Mu\x00g", "Mug \ud83d", "\udfff", "\x00"])
def test_nul_or_lone_surrogate_in_a_product_name_still_records_the_paid_order(
    default_adapter, name
):
    with transaction.atomic():
        rows = record_order_event("Purchase", order_with_line_name(name, "NUL1"))
        # The payment's own work goes on in the same transaction.
        Order.objects.create(number="NUL1", total=Decimal("9.99"))
    [row] = rows
    row = TrackedEvent.objects.get(pk=row.pk)
    assert row.status == TrackedEvent.Status.PENDING
    [content] = row.payload["properties"]["contents"]
    assert "\x00" not in content.get("content_name", "")
    json.dumps(row.payload, ensure_ascii=False).encode("utf-8")
    assert Order.objects.filter(number="NUL1").exists()


@pytest.mark.django_db
def test_a_row_that_cannot_be_stored_in_full_is_kept_failed_with_the_reason(default_adapter):
    # A shop's own code can hand the receiver a context the database refuses (a NUL in the
    # page address on PostgreSQL, or anything else): the paid order still leaves its row.
    order = order_with_line_name("Mug", "NUL2")
    unstorable = BrowserContext(page_url="https://shop.example/\x00", user_agent="\ud800")
    with transaction.atomic():
        rows = record_order_event("Purchase", order, context=unstorable)
        Order.objects.create(number="NUL2", total=Decimal("9.99"))
    [row] = rows
    row = TrackedEvent.objects.get(pk=row.pk)
    assert row.order_id == "NUL2" and row.event_id == "order_NUL2"
    if row.status == TrackedEvent.Status.FAILED:
        # The database refused the full row (PostgreSQL): the reason is kept.
        assert row.last_error.startswith("Could not record the event: ")
        assert row.payload == {}
    else:
        assert row.status == TrackedEvent.Status.PENDING  # SQLite stores it as it is
    assert Order.objects.filter(number="NUL2").exists()


def test_storable_text_drops_nul_and_replaces_lone_surrogates():
    from tiktok_tracking.boundaries import storable_text

    assert storable_text("a\x00b") == "ab"
    assert storable_text("x\ud800y") == "x?y"
    assert storable_text("naïve 🎉") == "naïve 🎉"


# Defect 9: personal data in page URLs -------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            f"https://shop.example/checkout/?email={EMAIL}&phone=%2B14155552671&ttclid=E.C.P"
            "&utm_source=tiktok&utm_campaign=spring#step-2",
            "https://shop.example/checkout/?ttclid=E.C.P&utm_source=tiktok&utm_campaign=spring",
        ),
        ("https://user:secret@shop.example:8443/a/", "https://shop.example:8443/a/"),
        (
            f"https://shop.example/account/{EMAIL}/orders",
            "https://shop.example/account/redacted/orders",
        ),
        ("https://shop.example/a?utm_content=jane%40example.com", "https://shop.example/a"),
        ("HTTPS://Shop.Example/Path?q=1", "https://shop.example/Path"),
        ("javascript:alert(1)", None),
        ("not a url", None),
        ("http://[::1/", None),
        ("", None),
        (None, None),
    ],
)
def test_private_url(url, expected):
    from tiktok_tracking.boundaries import private_url

    assert private_url(url) == expected


@pytest.mark.django_db
def test_raw_email_and_phone_in_page_urls_are_stripped_before_storing_and_purged():
    client = us_client()
    query = f"?email={EMAIL}&phone=%2B14155552671&ttclid=CLICK1&utm_source=tiktok"
    referrer = f"https://mail.example/read?to={EMAIL}&tel={PHONE}"
    client.post(f"/checkout/{query}", {"number": "URL1"}, HTTP_REFERER=referrer)
    client.post(f"/pay/URL1/{query}", HTTP_REFERER=referrer)

    row = TrackedEvent.objects.get(event_id="order_URL1")
    assert row.payload["page"] == {
        "url": "http://testserver/pay/URL1/?ttclid=CLICK1&utm_source=tiktok",
        "referrer": "https://mail.example/read",
    }
    assert row.payload["user"]["ttclid"] == "CLICK1"
    text = stored_text(TrackedEvent, CheckoutContext)
    for raw in (EMAIL, "jane.doe%40example.com", PHONE, "14155552671"):
        assert raw not in text
    assert EMAIL not in json.dumps(masked_payload(row.payload))

    # Purged with the other personal data once finished and past the retention.
    TrackedEvent.objects.filter(pk=row.pk).update(status=TrackedEvent.Status.DELIVERED)
    purge_personal_data(now=timezone.now() + timezone.timedelta(days=30))
    row.refresh_from_db()
    assert "page" not in row.payload and "ip" not in row.payload["user"]
    assert masked_payload(row.payload, purged=True)["page"] == "(purged)"
    context = CheckoutContext.objects.get(order_id="URL1")
    assert (context.page_url, context.referrer, context.user_agent) == ("", "", "")


def test_the_admin_shows_page_urls_of_older_rows_without_personal_data():
    payload = {"user": {}, "page": {"url": f"https://shop.example/?email={EMAIL}"}}
    assert masked_payload(payload)["page"] == {"url": "https://shop.example/"}


# Defect 11: a malformed Content-Length --------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("length", ["abc", "-1", "1e3", " 12", "+12", "١٢"])
def test_malformed_content_length_on_the_receipt_endpoint_is_a_400(length):
    body = json.dumps({"token": receipt_token(PIXEL, "Purchase", "order_X")})
    response = us_client().generic(
        "POST", "/tiktok/receipt/", body, content_type="text/plain", CONTENT_LENGTH=length
    )
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": "invalid Content-Length"}


@pytest.mark.parametrize("value", ["jane\ud800@example.com", "\udfff", "id-\ud83d"])
def test_a_match_key_with_a_lone_surrogate_is_left_out_not_raised(value):
    from tiktok_tracking.hashing import hash_email, hash_external_id

    assert hash_email(value) is None
    assert hash_external_id(value) is None
