"""Every boundary at once: arbitrary cookies, headers, URLs, adapter values and TikTok answers.

One property, 1,000 examples, meant for PostgreSQL (the CI's second pass), where lengths and
NUL characters are enforced: whatever arrives, the checkout answers, a paid order leaves
exactly one row per pixel, no row stays ``sending`` once its batch is answered, and no stored
text holds the shopper's raw email or phone number or an access token.
"""

import itertools
import json
from decimal import Decimal
from types import SimpleNamespace
from urllib.parse import urlencode

import phonenumbers
import pytest
from django.db import transaction
from django.http import HttpResponse
from django.test import Client
from django.urls import include, path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiktok_tracking import capture_context
from tiktok_tracking.delivery import deliver_due_events, expire_leases
from tiktok_tracking.models import (
    BrowserReceipt,
    CheckoutContext,
    ConsentRecord,
    DeliveryAnswer,
    TrackedEvent,
)
from tiktok_tracking.sandbox import SandboxServer
from tiktok_tracking.signals import payment_completed
from tiktok_tracking.sql import database_now
from tiktok_tracking.visitor import CONSENT_COOKIE, TTCLID_COOKIE, TTP_COOKIE, VISITOR_COOKIE

PIXELS = (
    {"PIXEL_ID": "CPROPERTYPIXEL01", "ACCESS_TOKEN": "property-token-a-7f3c9e21d4"},
    {"PIXEL_ID": "CPROPERTYPIXEL02", "ACCESS_TOKEN": "property-token-b-0b88a6f5e3"},
)
TOKENS = tuple(pixel["ACCESS_TOKEN"] for pixel in PIXELS)
EXAMPLES = 1000

# The orders of the running example, by number: the view reads them through the adapter.
ORDERS = {}
numbers = itertools.count(1)


@csrf_exempt
def checkout(request, number):
    capture_context(request, ORDERS[number])
    return HttpResponse("checkout")


@csrf_exempt
def pay(request, number):
    with transaction.atomic():
        payment_completed.send(sender=SimpleNamespace, order=ORDERS[number], request=request)
    return HttpResponse("paid")


urlpatterns = [
    path("shop/checkout/<str:number>/", checkout),
    path("shop/pay/<str:number>/", pay),
    path("tiktok/", include("tiktok_tracking.urls")),
]


def as_wsgi_header(text):
    """``text`` sent as UTF-8 bytes, as a WSGI server hands them on: decoded as ISO-8859-1."""
    return text.encode("utf-8", "replace").decode("iso-8859-1")


def as_form_value(text):
    """``text`` as a browser can send it in a form: UTF-8, lone surrogates replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


# Strategies ----------------------------------------------------------------------------------

any_text = st.one_of(
    st.text(max_size=40),
    st.text(min_size=60, max_size=700),
    st.sampled_from(["", " ", "\x00", "\ud800", "a\x00b", "é" * 70, "<script>", "%00", "null"]),
)
numbers_of_any_kind = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.just(2**31 + 1),
)
any_value = st.one_of(any_text, numbers_of_any_kind, st.none())
json_numbers = st.one_of(st.integers(), st.floats(allow_nan=False), st.just(2**31 + 1))
regions = st.sampled_from(["US", "GB", "DE", "FR", "JP", "BR", "IN", "AU", "MX", "ZA"])


@st.composite
def phones(draw):
    """A real number of some country, typed as people type it, and its country."""
    region = draw(regions)
    example = phonenumbers.example_number(region)
    style = draw(
        st.sampled_from(
            [phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL]
        )
    )
    return phonenumbers.format_number(example, style), region


@st.composite
def orders(draw, number):
    """Half the orders are sendable (US, valid totals; only the line's texts hostile), so that
    TikTok's answers are read; the other half hostile in every field."""
    phone, phone_region = draw(phones())
    sendable = draw(st.booleans())
    line = SimpleNamespace(
        sku=draw(st.one_of(st.just("SKU-1"), any_text if sendable else any_value)),
        name=draw(any_text if sendable else st.one_of(st.just("Mug"), any_value)),
        quantity=1 if sendable else draw(st.one_of(st.just(1), numbers_of_any_kind)),
        price=Decimal("9.99")
        if sendable
        else draw(st.one_of(st.just(Decimal("9.99")), numbers_of_any_kind)),
    )
    if sendable:
        total, currency, country = Decimal("9.99"), "USD", "US"
    else:
        total = draw(st.one_of(st.just(Decimal("9.99")), numbers_of_any_kind, any_text))
        currency = draw(st.one_of(st.sampled_from(["USD", "EUR", "JPY"]), any_text))
        country = draw(st.one_of(st.just(phone_region), any_text))
    return SimpleNamespace(
        order_id=number,
        total=total,
        currency=currency,
        items=[line],
        email=draw(st.emails().filter(lambda email: len(email) >= 12)),
        phone=phone,
        customer_id=draw(any_value),
        country=country,
        # Not read by the adapter: where the test finds the number's country.
        phone_region=phone_region,
    )


# An answer quoting the token it was sent with, as a misbehaving proxy or error page might.
echoed_tokens = st.builds(
    lambda token, template: template.format(token=token),
    st.sampled_from(TOKENS),
    st.sampled_from(["invalid token {token} for data.0", "Access-Token: {token}", "{token}"]),
)


def tiktok_answers():
    """What TikTok might answer: any code, any request_id, messages echoing a token, any body."""
    envelope = st.fixed_dictionaries(
        {
            "code": st.one_of(
                st.sampled_from([0, 20001, 40001, 40002, 40100, 50000, 50002, 2**31 + 1, -1]),
                st.integers(),
                any_text,
                st.none(),
            ),
            "message": st.one_of(
                echoed_tokens,
                any_text,
                st.text(min_size=1, max_size=5).map(lambda text: text * 50_000),
            ),
            "request_id": st.one_of(any_text, st.just("r" * 200), json_numbers, echoed_tokens),
        }
    )
    return st.one_of(
        envelope.map(lambda answer: {"body": json.dumps(answer)}),
        st.builds(
            lambda status, text: {"status": status, "body": text},
            st.sampled_from([200, 400, 429, 500, 503]),
            any_text.map(as_form_value),
        ),
        st.just({"drop": True}),
        st.just({"code": 0}),
    )


@st.composite
def visits(draw):
    """The hostile side of one shopper's visit: cookies, headers and the page's query."""
    cookies = {
        VISITOR_COOKIE: draw(st.one_of(st.text(max_size=600), st.just("v" * 300))),
        TTCLID_COOKIE: draw(any_text),
        TTP_COOKIE: draw(st.one_of(any_text, st.just("t" * 600))),
        CONSENT_COOKIE: draw(any_text),
        "country": draw(st.one_of(st.sampled_from(["US", "DE", "ZZ", "ÄÖ"]), any_text)),
    }
    return {
        "cookie": "; ".join(f"{name}={value}" for name, value in cookies.items()),
        "query": draw(st.dictionaries(any_text, any_text, max_size=3)),
        "ttclid": draw(st.one_of(st.none(), any_text)),
        "user_agent": draw(st.one_of(any_text, st.just("Mozilla/5.0 " * 200))),
        "accept_language": draw(any_text),
        "forwarded_for": draw(
            st.one_of(any_text, st.sampled_from(["fe80::1%eth0", "203.0.113.9, 10.0.0.1"]))
        ),
        "referrer_path": draw(any_text),
        "consent": draw(st.one_of(st.sampled_from(["granted", "denied"]), any_text)),
        "consent_source": draw(any_text),
        "content_length": draw(st.one_of(st.none(), any_text, st.just("-1"))),
        "repeat_signal": draw(st.booleans()),
    }


# The property --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def answering_sandbox():
    server = SandboxServer(tokens={p["PIXEL_ID"]: p["ACCESS_TOKEN"] for p in PIXELS}).start()
    yield server
    server.stop()


@pytest.fixture
def two_pixels(settings, answering_sandbox):
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "PIXEL_ID": None,
        "ACCESS_TOKEN": None,
        "PIXELS": [dict(pixel) for pixel in PIXELS],
        "ORDER_ADAPTER": "tiktok_tracking.adapters.OrderAdapter",
        "API_URL": answering_sandbox.events_url,
        "TRUSTED_PROXIES": ("127.0.0.1/32",),
        "TIMEOUT": 2.0,
    }
    return answering_sandbox


def stored_texts():
    """Every text the app keeps in its tables, JSON as the text it is stored as."""
    for model in (TrackedEvent, DeliveryAnswer, CheckoutContext, ConsentRecord, BrowserReceipt):
        for row in model.objects.values():
            for value in row.values():
                if isinstance(value, (dict, list)):
                    yield json.dumps(value, ensure_ascii=False)
                elif isinstance(value, str):
                    yield value


def raw_forms(email, phone, region):
    """The ways a shopper's email and phone could be found in stored text."""
    forms = {email, email.lower(), email.replace("@", "%40"), phone}
    parsed = phonenumbers.parse(phone, region)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    forms |= {e164, e164[1:], str(parsed.national_number)}
    return forms


@pytest.mark.django_db
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@pytest.mark.urls(__name__)
@given(data=st.data(), visit=visits(), answers=st.lists(tiktok_answers(), min_size=1, max_size=4))
def test_any_input_at_any_boundary_keeps_checkouts_rows_and_secrets(
    two_pixels, data, visit, answers
):
    sandbox = two_pixels
    number = f"P{next(numbers)}"
    order = ORDERS[number] = data.draw(orders(number))
    query = dict(visit["query"])
    # The shopper's own details in the page's address, as some checkouts put them.
    query.update(email=order.email, phone=order.phone)
    if visit["ttclid"] is not None:
        query["ttclid"] = visit["ttclid"]
    query_string = urlencode(
        {
            key.encode("utf-8", "replace"): value.encode("utf-8", "replace")
            for key, value in query.items()
        }
    )
    headers = {
        name: as_wsgi_header(value)
        for name, value in {
            "HTTP_COOKIE": visit["cookie"],
            "HTTP_USER_AGENT": visit["user_agent"],
            "HTTP_ACCEPT_LANGUAGE": visit["accept_language"],
            "HTTP_REFERER": f"https://mail.example/{visit['referrer_path']}?to={order.email}",
            "HTTP_X_FORWARDED_FOR": visit["forwarded_for"],
        }.items()
    }
    client = Client(raise_request_exception=False)
    sandbox.reset()
    sandbox.program(answers)
    with transaction.atomic():
        # The checkout answers, whatever the visit and the order hold.
        checkout = client.post(f"/shop/checkout/{number}/?{query_string}", **headers)
        assert checkout.status_code == 200
        consent = client.post(
            "/tiktok/consent/",
            {
                "status": as_form_value(visit["consent"]),
                "source": as_form_value(visit["consent_source"]),
            },
            **headers,
        )
        assert consent.status_code in (200, 400, 403)
        paid = client.post(f"/shop/pay/{number}/?{query_string}", **headers)
        assert paid.status_code == 200
        if visit["repeat_signal"]:
            assert client.post(f"/shop/pay/{number}/", **headers).status_code == 200
        receipt_headers = dict(headers)
        if visit["content_length"] is not None:
            receipt_headers["CONTENT_LENGTH"] = as_wsgi_header(visit["content_length"])
        receipt = client.generic(
            "POST", "/tiktok/receipt/", '{"token": "x"}', "text/plain", **receipt_headers
        )
        assert 400 <= receipt.status_code < 500

        # Exactly one row per paid order and pixel, however often the payment was signalled.
        rows = TrackedEvent.objects.all()
        assert sorted(rows.values_list("pixel_id", flat=True)) == sorted(
            pixel["PIXEL_ID"] for pixel in PIXELS
        )

        deliver_due_events(max_seconds=0)
        # Every answer is recorded, odd or not: no row is left sending for the sweeper to
        # send again once the lease runs out.
        assert not TrackedEvent.objects.filter(status=TrackedEvent.Status.SENDING).exists()
        # Nor does a lease the sweeper could take back, were every one held long over.
        TrackedEvent.objects.exclude(lease_expires_at=None).update(
            lease_expires_at=database_now() - timezone.timedelta(days=3)
        )
        assert expire_leases() == 0

        texts = "\n".join(stored_texts())
        for token in TOKENS:
            assert token not in texts
        for raw in raw_forms(order.email, order.phone, order.phone_region):
            assert raw not in texts, raw
        transaction.set_rollback(True)
    del ORDERS[number]
