"""Browser receipts (signed, single-use, consent-gated) and click-id capture by the middleware."""

import json

import pytest
from django.conf import settings
from django.core import signing
from django.test import Client, override_settings

from tests.shop.models import Order
from tiktok_tracking.models import BrowserReceipt, TrackedEvent
from tiktok_tracking.receipts import SALT, InvalidReceipt, read_receipt_token, receipt_token
from tiktok_tracking.signals import payment_completed
from tiktok_tracking.visitor import TTCLID_COOKIE, VISITOR_COOKIE

PIXEL = "CTESTPIXEL0001"


def us_client():
    client = Client()
    client.cookies["country"] = "US"
    return client


def post_receipt(client, body):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/tiktok/receipt/", data, content_type="text/plain")


def test_token_round_trips_and_rejects_tampering():
    token = receipt_token(PIXEL, "Purchase", "order_1")
    assert read_receipt_token(token) == (PIXEL, "Purchase", "order_1")
    other = receipt_token(PIXEL, "Purchase", "order_2")
    swapped = other.split(":")[0] + ":" + token.split(":", 1)[1]  # order_2 under order_1's MAC
    for forged in (token[:-2] + "xx", swapped, "", "a:b:c"):
        with pytest.raises(InvalidReceipt):
            read_receipt_token(forged)
    with pytest.raises(InvalidReceipt):
        read_receipt_token(token, max_age=-1)
    other_salt = signing.TimestampSigner(salt=SALT + "x").sign_object([PIXEL, "Purchase", "o"])
    with pytest.raises(InvalidReceipt):
        read_receipt_token(other_salt)


@pytest.mark.django_db
def test_receipt_sets_browser_seen_at_once_and_refuses_replays():
    client = us_client()
    client.post("/checkout/", {"number": "R1", "email": "a@example.com"})
    client.post("/pay/R1/")
    token = receipt_token(PIXEL, "Purchase", "order_R1")
    response = post_receipt(client, {"token": token})
    assert response.status_code == 201
    row = TrackedEvent.objects.get(event_id="order_R1")
    assert row.browser_seen_at is not None
    assert post_receipt(client, {"token": token}).status_code == 409
    assert BrowserReceipt.objects.count() == 1


@pytest.mark.django_db
def test_receipt_before_the_webhook_is_copied_onto_the_row_later():
    client = us_client()
    client.post("/checkout/", {"number": "R2", "email": "a@example.com"})
    assert (
        post_receipt(client, {"token": receipt_token(PIXEL, "Purchase", "order_R2")}).status_code
        == 201
    )
    assert not TrackedEvent.objects.exists()
    answers = payment_completed.send(sender=Order, order=Order.objects.get(number="R2"))
    received_at = BrowserReceipt.objects.get().received_at
    assert TrackedEvent.objects.get(event_id="order_R2").browser_seen_at == received_at
    # The row the receiver returns reads it too.
    [[row]] = [answer for _, answer in answers if isinstance(answer, list)]
    assert row.browser_seen_at == received_at


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, status",
    [
        (b"not json", 400),
        ({"token": "forged:token"}, 400),
        ({"event_id": "order_1"}, 400),
        ([1, 2, 3], 400),
        ({"token": 12}, 400),
        ("x" * 5000, 413),
    ],
)
def test_bad_receipts_are_rejected_and_write_nothing(body, status):
    assert post_receipt(us_client(), body).status_code == status
    assert not BrowserReceipt.objects.exists()


@pytest.mark.django_db
def test_receipt_without_consent_is_refused():
    client = Client()
    client.cookies["country"] = "DE"  # opt-in region, no choice made
    response = post_receipt(client, {"token": receipt_token(PIXEL, "Purchase", "order_9")})
    assert response.status_code == 403
    assert not BrowserReceipt.objects.exists()


def test_receipt_endpoint_only_takes_post():
    assert Client().get("/tiktok/receipt/").status_code == 405


@pytest.mark.django_db
def test_middleware_keeps_the_click_id_and_gives_a_visitor_id():
    client = us_client()
    response = client.get("/?ttclid=ad-click-7")
    cookie = response.cookies[TTCLID_COOKIE]
    assert cookie.value == "ad-click-7"
    assert cookie["max-age"] == 28 * 24 * 3600
    assert cookie["httponly"]
    assert response.cookies[VISITOR_COOKIE].value
    # Days later, the checkout has no ttclid in its URL, yet the context still carries it.
    client.post("/checkout/", {"number": "C1", "email": "a@example.com"})
    payment_completed.send(sender=Order, order=Order.objects.get(number="C1"))
    assert TrackedEvent.objects.get().payload["user"]["ttclid"] == "ad-click-7"


@pytest.mark.django_db
def test_cookies_set_over_https_are_secure_and_over_http_not():
    from tiktok_tracking.visitor import CONSENT_COOKIE

    for secure in (True, False):
        client = Client()
        client.cookies["country"] = "US"
        landing = client.get("/?ttclid=ad-click-9", secure=secure)
        choice = client.post("/tiktok/consent/", {"status": "granted"}, secure=secure)
        cookies = [
            landing.cookies[TTCLID_COOKIE],
            landing.cookies[VISITOR_COOKIE],
            choice.cookies[CONSENT_COOKIE],
        ]
        # A development server on plain HTTP must still get its cookies back.
        assert [bool(cookie["secure"]) for cookie in cookies] == [secure] * 3


@pytest.mark.django_db
def test_no_click_id_cookie_without_consent_in_an_opt_in_region():
    client = Client()
    client.cookies["country"] = "DE"
    assert TTCLID_COOKIE not in client.get("/?ttclid=ad-click-8").cookies


@pytest.mark.django_db
def test_capture_context_records_initiate_checkout_with_the_tag_s_event_id():
    with override_settings(
        TIKTOK_TRACKING={**settings.TIKTOK_TRACKING, "SERVER_FUNNEL_EVENTS": ("InitiateCheckout",)}
    ):
        us_client().post("/checkout/", {"number": "F1", "email": "a@example.com"})
    row = TrackedEvent.objects.get()
    assert (row.event, row.event_id) == ("InitiateCheckout", "order_F1_initiatecheckout")
    assert row.status == TrackedEvent.Status.PENDING


@pytest.mark.django_db
def test_trusted_proxy_setting_decides_which_ip_is_stored():
    tracking = {**settings.TIKTOK_TRACKING, "TRUSTED_PROXIES": ("10.0.0.0/8",)}
    with override_settings(TIKTOK_TRACKING=tracking):
        us_client().post(
            "/checkout/",
            {"number": "P1"},
            REMOTE_ADDR="10.1.2.3",
            HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.20",
        )
    us_client().post(
        "/checkout/", {"number": "P2"}, REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="6.6.6.6"
    )
    for number, ip in (("P1", "198.51.100.20"), ("P2", "203.0.113.5")):
        payment_completed.send(sender=Order, order=Order.objects.get(number=number))
        assert TrackedEvent.objects.get(order_id=number).payload["user"]["ip"] == ip
