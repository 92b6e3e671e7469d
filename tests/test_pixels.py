"""Several pixels: settings, checks, one row per pixel, each delivered with its own token."""

import io
import json
import logging
import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.sites.models import Site
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.template import Context, Template
from django.test import Client, RequestFactory, override_settings

from tests.shop.models import Order, OrderLine
from tiktok_tracking import checks, conf, delivery
from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured
from tiktok_tracking.models import BrowserReceipt, TrackedEvent
from tiktok_tracking.pixels import Pixel, configured_tokens, parse_pixels, pixels_for_site
from tiktok_tracking.receipts import read_receipt_token
from tiktok_tracking.sandbox import SandboxServer
from tiktok_tracking.signals import payment_completed
from tiktok_tracking.visitor import get_visitor

Status = TrackedEvent.Status

EU_PIXEL = {"PIXEL_ID": "CPIXELEU00001", "ACCESS_TOKEN": "token-eu-0123456789"}
US_PIXEL = {"PIXEL_ID": "CPIXELUS00002", "ACCESS_TOKEN": "token-us-9876543210"}
AGENCY_PIXEL = {"PIXEL_ID": "CPIXELAG00003", "ACCESS_TOKEN": "token-agency-555555"}
SINGLE_PIXEL_KEYS = {"PIXEL_ID": None, "ACCESS_TOKEN": None, "TEST_EVENT_CODE": None}


def with_pixels(*entries, **overrides):
    """The test settings with ``PIXELS`` instead of the single pixel."""
    return override_settings(
        TIKTOK_TRACKING={
            **settings.TIKTOK_TRACKING,
            **SINGLE_PIXEL_KEYS,
            "PIXELS": [dict(entry) for entry in entries],
            **overrides,
        }
    )


def make_order(number, **fields):
    order = Order.objects.create(
        number=number,
        email="buyer@example.com",
        country="US",
        currency="USD",
        total=Decimal("40.00"),
        **fields,
    )
    OrderLine.objects.create(order=order, sku="SKU-1", name="Mug", quantity=1, price=order.total)
    return order


def pay(order, **kwargs):
    with transaction.atomic():
        payment_completed.send(sender=Order, order=order, **kwargs)


def rows_of(number):
    return list(TrackedEvent.objects.filter(order_id=number).order_by("pixel_id"))


# Settings -------------------------------------------------------------------------------------


def test_the_single_pixel_keys_make_one_pixel():
    pixels = parse_pixels({"PIXEL_ID": "C1", "ACCESS_TOKEN": "t", "TEST_EVENT_CODE": "TEST1"})
    assert pixels == (Pixel("C1", "t", "TEST1"),)
    assert parse_pixels({}) == ()
    assert parse_pixels({"PIXEL_ID": ""}) == ()


def test_pixels_lists_each_with_its_token_code_and_sites():
    pixels = parse_pixels(
        {
            "PIXELS": [
                {**EU_PIXEL, "TEST_EVENT_CODE": "TEST_EU", "SITES": [1, 3]},
                US_PIXEL,
            ]
        }
    )
    assert [pixel.pixel_id for pixel in pixels] == ["CPIXELEU00001", "CPIXELUS00002"]
    assert pixels[0].test_event_code == "TEST_EU"
    assert pixels[0].sites == frozenset({1, 3})
    assert pixels[1].access_token == "token-us-9876543210"
    assert [p.pixel_id for p in pixels_for_site(pixels, 2)] == ["CPIXELUS00002"]
    assert [p.pixel_id for p in pixels_for_site(pixels, 3)] == ["CPIXELEU00001", "CPIXELUS00002"]
    # An unknown site only reaches the pixels that track every site.
    assert [p.pixel_id for p in pixels_for_site(pixels, None)] == ["CPIXELUS00002"]


def test_a_pixel_never_shows_its_token():
    pixel = Pixel("C1", "secret-token-0000", "TEST1")
    assert "secret-token-0000" not in repr(pixel)
    assert "secret-token-0000" not in str(pixel)


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"PIXELS": [EU_PIXEL], "PIXEL_ID": "C1"}, "PIXELS replaces PIXEL_ID"),
        ({"PIXELS": [EU_PIXEL], "ACCESS_TOKEN": "x"}, "PIXELS replaces ACCESS_TOKEN"),
        ({"PIXELS": EU_PIXEL}, "PIXELS must be a list of dicts, not dict"),
        ({"PIXELS": "CPIXEL"}, "PIXELS must be a list of dicts, not str"),
        ({"PIXELS": []}, "PIXELS is empty"),
        ({"PIXELS": ["CPIXEL"]}, "PIXELS[0] must be a dict, not str"),
        ({"PIXELS": [{**EU_PIXEL, "TOKEN": "x"}]}, "PIXELS[0] has unknown keys TOKEN"),
        ({"PIXELS": [{"ACCESS_TOKEN": "x"}]}, "PIXELS[0]['PIXEL_ID'] must be the pixel code"),
        ({"PIXELS": [{"PIXEL_ID": "  "}]}, "PIXELS[0]['PIXEL_ID'] must be the pixel code"),
        ({"PIXELS": [EU_PIXEL, EU_PIXEL]}, "PIXELS[1]: pixel 'CPIXELEU00001' is listed twice"),
        ({"PIXELS": [{**EU_PIXEL, "SITES": "1"}]}, "PIXELS[0]['SITES'] must be a list of site"),
        ({"PIXELS": [{**EU_PIXEL, "SITES": [True]}]}, "PIXELS[0]['SITES'] must be a list"),
        ({"PIXELS": [{**EU_PIXEL, "ACCESS_TOKEN": 12345}]}, "must be a string, not int"),
    ],
)
def test_malformed_pixels_are_named(user, message):
    with pytest.raises(TikTokTrackingImproperlyConfigured) as info:
        parse_pixels(user)
    assert message in str(info.value)
    # A malformed entry may hold a token: the error never repeats it.
    assert "token-eu-0123456789" not in str(info.value)


def check_ids():
    return sorted(error.id for error in checks.check_settings())


def test_checks_accept_well_formed_pixels():
    with with_pixels(EU_PIXEL, {**US_PIXEL, "SITES": [1]}):
        assert check_ids() == []


def test_checks_name_malformed_pixels_and_missing_tokens():
    with with_pixels(EU_PIXEL, EU_PIXEL):
        assert check_ids() == ["tiktok_tracking.E014"]
    with with_pixels(EU_PIXEL, {"PIXEL_ID": "CPIXELNOTOKEN"}):
        [error] = checks.check_settings()
    assert error.id == "tiktok_tracking.E002"
    assert error.msg == (
        "TIKTOK_TRACKING['PIXELS'][1]['ACCESS_TOKEN'] is not set (pixel CPIXELNOTOKEN)."
    )


def test_checks_want_the_sites_framework_for_sites():
    apps_without_sites = [app for app in settings.INSTALLED_APPS if app != "django.contrib.sites"]
    with (
        with_pixels({**EU_PIXEL, "SITES": [1]}),
        override_settings(INSTALLED_APPS=apps_without_sites),
    ):
        assert check_ids() == ["tiktok_tracking.E015"]


def test_public_settings_mask_every_pixel_token():
    with with_pixels({**EU_PIXEL, "TEST_EVENT_CODE": "TEST_EU"}, {"PIXEL_ID": "CPIXELNOTOKEN"}):
        public = conf.public_settings()
        assert public["PIXELS"] == [
            {"PIXEL_ID": "CPIXELEU00001", "ACCESS_TOKEN": "set", "TEST_EVENT_CODE": "TEST_EU"},
            {"PIXEL_ID": "CPIXELNOTOKEN", "ACCESS_TOKEN": "not set"},
        ]
        assert configured_tokens() == ["token-eu-0123456789"]
    # Malformed: named by type only, since a token may sit where a dict was expected.
    with with_pixels():
        settings.TIKTOK_TRACKING["PIXELS"] = [("CPIXEL", "token-eu-0123456789")]
        assert conf.public_settings()["PIXELS"] == ["<invalid: tuple>"]


# Server lane: one row per pixel ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_payment_records_one_row_per_pixel_with_the_same_event_id(
    django_capture_on_commit_callbacks,
):
    with with_pixels(EU_PIXEL, US_PIXEL), django_capture_on_commit_callbacks() as callbacks:
        pay(make_order("M1"))
    rows = rows_of("M1")
    assert [row.pixel_id for row in rows] == ["CPIXELEU00001", "CPIXELUS00002"]
    assert {row.event_id for row in rows} == {"order_M1"}
    assert rows[0].payload == rows[1].payload
    assert {row.status for row in rows} == {Status.PENDING}
    # One wake-up for both rows.
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_a_repeated_signal_keeps_the_rows_and_a_pixel_added_since_gets_its_own():
    order = make_order("M2")
    with with_pixels(EU_PIXEL):
        pay(order)
    [first] = rows_of("M2")
    with with_pixels(EU_PIXEL, US_PIXEL):
        pay(order)
        pay(order)
    rows = rows_of("M2")
    assert [row.pixel_id for row in rows] == ["CPIXELEU00001", "CPIXELUS00002"]
    assert rows[0].pk == first.pk


@pytest.mark.django_db
def test_invalid_order_ids_fail_once_per_pixel():
    order = make_order("M3")
    Order.objects.filter(pk=order.pk).update(number="bad\x07id")
    order.refresh_from_db()
    with with_pixels(EU_PIXEL, US_PIXEL):
        pay(order)
        pay(order)
    rows = list(TrackedEvent.objects.filter(event_id__startswith="invalid_"))
    assert sorted(row.pixel_id for row in rows) == ["CPIXELEU00001", "CPIXELUS00002"]
    assert {row.status for row in rows} == {Status.FAILED}


@pytest.mark.django_db
def test_without_any_pixel_nothing_is_recorded_and_the_payment_commits(caplog):
    order = make_order("M4")
    with override_settings(TIKTOK_TRACKING={**settings.TIKTOK_TRACKING, "PIXEL_ID": None}):
        pay(order)
    assert not TrackedEvent.objects.exists()
    assert "no pixel is configured" in caplog.text


# Sites ----------------------------------------------------------------------------------------


@pytest.fixture
def second_site(db):
    return Site.objects.create(domain="shop-two.example", name="Shop two")


def site_pixels(second_site):
    return with_pixels(
        {**EU_PIXEL, "SITES": [1]},
        {**US_PIXEL, "SITES": [second_site.pk]},
        AGENCY_PIXEL,
    )


@pytest.mark.django_db
def test_the_request_s_site_picks_the_pixels(second_site):
    client = Client(HTTP_HOST="shop-two.example")
    client.cookies["country"] = "US"
    with site_pixels(second_site):
        client.post("/checkout/", {"number": "S1", "email": "a@example.com"})
        assert client.post("/pay/S1/").status_code == 200
    assert [row.pixel_id for row in rows_of("S1")] == ["CPIXELAG00003", "CPIXELUS00002"]


@pytest.mark.django_db
def test_a_webhook_uses_the_order_s_site(second_site):
    order = make_order("S2")
    order.site_id = 1  # as on a shop whose orders keep their site (django-oscar's do)
    with site_pixels(second_site):
        pay(order)
    assert [row.pixel_id for row in rows_of("S2")] == ["CPIXELAG00003", "CPIXELEU00001"]


@pytest.mark.django_db
def test_an_unknown_site_reaches_only_the_pixels_of_every_site(second_site, caplog):
    with site_pixels(second_site), caplog.at_level(logging.WARNING):
        pay(make_order("S3"))
    assert [row.pixel_id for row in rows_of("S3")] == ["CPIXELAG00003"]
    assert "The site of an order is unknown" in caplog.text


@pytest.mark.django_db
def test_site_id_setting_stands_in_for_a_missing_request(second_site):
    with site_pixels(second_site), override_settings(SITE_ID=second_site.pk):
        pay(make_order("S4"))
    assert [row.pixel_id for row in rows_of("S4")] == ["CPIXELAG00003", "CPIXELUS00002"]


# Browser lane ---------------------------------------------------------------------------------


def render(source, host="example.com", **context):
    request = RequestFactory().get("/thanks/", HTTP_HOST=host)
    request.COOKIES["country"] = "US"
    get_visitor(request)
    return Template("{% load tiktok_tracking %}" + source).render(
        Context({"request": request, **context})
    )


def receipt_tokens(html):
    return [json.loads(token) for token in re.findall(r"sendReceipt\((\"[^\"]+\")\)", html)]


@pytest.mark.django_db
def test_the_pixel_tag_loads_the_site_s_pixels(second_site):
    with site_pixels(second_site):
        html = render("{% tiktok_pixel %}")
        other = render("{% tiktok_pixel %}", host="shop-two.example")
        unknown = render("{% tiktok_pixel %}", host="elsewhere.example")
    assert re.findall(r"ttq\.load\(\"(\w+)\"", html) == ["CPIXELEU00001", "CPIXELAG00003"]
    assert re.findall(r"ttq\.load\(\"(\w+)\"", other) == ["CPIXELUS00002", "CPIXELAG00003"]
    assert re.findall(r"ttq\.load\(\"(\w+)\"", unknown) == ["CPIXELAG00003"]
    assert html.index("ttq.load(") < html.index("ttq.page();")


@pytest.mark.django_db
def test_a_site_without_pixels_renders_only_a_comment(second_site):
    with with_pixels({**EU_PIXEL, "SITES": [1]}):
        html = render("{% tiktok_pixel %}", host="shop-two.example")
    assert html == "<!-- TikTok pixel: off (no pixel for this site) -->"


@pytest.mark.django_db
def test_the_purchase_tag_sends_one_receipt_per_pixel_and_each_reaches_its_row():
    order = make_order("B1")
    with with_pixels(EU_PIXEL, US_PIXEL):
        html = render("{% tiktok_purchase order %}", order=order)
        tokens = receipt_tokens(html)
        assert [read_receipt_token(token) for token in tokens] == [
            ("CPIXELEU00001", "Purchase", "order_B1"),
            ("CPIXELUS00002", "Purchase", "order_B1"),
        ]
        # One ttq.track: the pixel script sends it to every pixel loaded on the page.
        assert html.count("ttq.track(") == 1
        shopper = Client()
        shopper.cookies["country"] = "US"
        for token in tokens[:1]:
            answer = shopper.post(
                "/tiktok/receipt/", json.dumps({"token": token}), content_type="text/plain"
            )
            assert answer.status_code == 201
        pay(order)
    seen = {row.pixel_id: row.browser_seen_at for row in rows_of("B1")}
    assert seen["CPIXELEU00001"] == BrowserReceipt.objects.get().received_at
    assert seen["CPIXELUS00002"] is None


# Delivery: each pixel with its own token and test code ----------------------------------------


@pytest.fixture
def pixel_sandbox():
    """A sandbox that, like TikTok, wants each pixel's own token."""
    server = SandboxServer(
        tokens={
            pixel["PIXEL_ID"]: pixel["ACCESS_TOKEN"] for pixel in (EU_PIXEL, US_PIXEL, AGENCY_PIXEL)
        }
    ).start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_each_pixel_s_events_go_in_its_own_requests_with_its_token(pixel_sandbox):
    with with_pixels(
        {**EU_PIXEL, "TEST_EVENT_CODE": "TEST_EU"}, US_PIXEL, API_URL=pixel_sandbox.events_url
    ):
        for number in ("D1", "D2"):
            pay(make_order(number))
        report = delivery.deliver_due_events(max_seconds=5)
    assert report.delivered == 4
    assert set(TrackedEvent.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    requests = {record["body"]["event_source_id"]: record for record in pixel_sandbox.requests}
    assert set(requests) == {"CPIXELEU00001", "CPIXELUS00002"}
    for record in requests.values():
        assert record["access_token_valid"] is True
        assert record["answer"]["code"] == 0
        assert sorted(item["event_id"] for item in record["body"]["data"]) == [
            "order_D1",
            "order_D2",
        ]
    assert requests["CPIXELEU00001"]["body"]["test_event_code"] == "TEST_EU"
    assert "test_event_code" not in requests["CPIXELUS00002"]["body"]


@pytest.mark.django_db(transaction=True)
def test_a_wrong_token_fails_only_its_own_pixel(pixel_sandbox):
    wrong_us = {**US_PIXEL, "ACCESS_TOKEN": "revoked-token-000000"}
    with with_pixels(EU_PIXEL, wrong_us, API_URL=pixel_sandbox.events_url):
        pay(make_order("W1"))
        delivery.deliver_due_events(max_seconds=5)
    rows = {row.pixel_id: row for row in rows_of("W1")}
    assert rows["CPIXELEU00001"].status == Status.DELIVERED
    assert rows["CPIXELUS00002"].status == Status.FAILED
    assert rows["CPIXELUS00002"].last_code == 40001


@pytest.mark.django_db(transaction=True)
def test_rows_of_a_pixel_taken_out_of_the_settings_fail_until_it_is_back(pixel_sandbox):
    with with_pixels(EU_PIXEL, US_PIXEL, API_URL=pixel_sandbox.events_url):
        pay(make_order("R1"))
    with with_pixels(EU_PIXEL, API_URL=pixel_sandbox.events_url):
        delivery.deliver_due_events(max_seconds=5)
    rows = {row.pixel_id: row for row in rows_of("R1")}
    assert rows["CPIXELEU00001"].status == Status.DELIVERED
    assert rows["CPIXELUS00002"].status == Status.FAILED
    assert rows["CPIXELUS00002"].last_error == (
        "Pixel CPIXELUS00002 is not in the settings (PIXEL_ID or PIXELS): nothing was sent."
    )
    assert [record["body"]["event_source_id"] for record in pixel_sandbox.requests] == [
        "CPIXELEU00001"
    ]
    with with_pixels(EU_PIXEL, US_PIXEL, API_URL=pixel_sandbox.events_url):
        call_command("tiktok_resend", "--pixel", "CPIXELUS00002", stdout=io.StringIO())
        delivery.deliver_due_events(max_seconds=5)
    assert TrackedEvent.objects.get(pixel_id="CPIXELUS00002").status == Status.DELIVERED


# tiktok_check ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_check_sends_a_test_event_to_each_pixel_with_its_own_code(pixel_sandbox):
    out = io.StringIO()
    with with_pixels(
        {**EU_PIXEL, "TEST_EVENT_CODE": "TEST_EU"},
        {**US_PIXEL, "TEST_EVENT_CODE": "TEST_US"},
        API_URL=pixel_sandbox.events_url,
    ):
        call_command("tiktok_check", "--send-test-event", stdout=out)
    text = out.getvalue()
    assert text.count("Verdict: delivered") == 2
    assert "ACCESS_TOKEN': 'set'" in text
    assert "token-eu-0123456789" not in text
    codes = {
        record["body"]["event_source_id"]: record["body"]["test_event_code"]
        for record in pixel_sandbox.requests
    }
    assert codes == {"CPIXELEU00001": "TEST_EU", "CPIXELUS00002": "TEST_US"}


@pytest.mark.django_db
def test_check_names_the_pixel_tiktok_refused_and_can_test_one_pixel(pixel_sandbox):
    wrong_us = {**US_PIXEL, "ACCESS_TOKEN": "revoked-token-000000", "TEST_EVENT_CODE": "TEST_US"}
    pixels = with_pixels(
        {**EU_PIXEL, "TEST_EVENT_CODE": "TEST_EU"}, wrong_us, API_URL=pixel_sandbox.events_url
    )
    with pixels, pytest.raises(CommandError) as info:
        call_command("tiktok_check", "--send-test-event", stdout=io.StringIO())
    assert str(info.value).startswith(
        "The test event was not accepted: pixel CPIXELUS00002: rejected:"
    )
    with pixels:
        call_command(
            "tiktok_check", "--send-test-event", "--pixel", "CPIXELEU00001", stdout=io.StringIO()
        )
        with pytest.raises(CommandError, match="Pixel CPIXELNONE is not configured"):
            call_command("tiktok_check", "--send-test-event", "--pixel", "CPIXELNONE")
    with with_pixels(EU_PIXEL), pytest.raises(CommandError) as info:
        call_command("tiktok_check", "--send-test-event", stdout=io.StringIO())
    assert "TEST_EVENT_CODE is not set in PIXELS for pixel(s) CPIXELEU00001" in str(info.value)


# tiktok_reconcile -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_reconcile_takes_one_pixel_at_a_time():
    with with_pixels(EU_PIXEL, US_PIXEL):
        for number in ("C1", "C2"):
            order = make_order(number, paid=True)
            pay(order)
        TrackedEvent.objects.filter(order_id="C2", pixel_id="CPIXELUS00002").delete()
        with pytest.raises(CommandError, match="Several pixels are configured"):
            call_command("tiktok_reconcile", stdout=io.StringIO(), stderr=io.StringIO())
        with pytest.raises(CommandError, match="Pixel CPIXELNONE is not configured"):
            call_command("tiktok_reconcile", "--pixel", "CPIXELNONE", stdout=io.StringIO())
        reports = {}
        for pixel_id in ("CPIXELEU00001", "CPIXELUS00002"):
            out = io.StringIO()
            call_command("tiktok_reconcile", "--pixel", pixel_id, "--format", "json", stdout=out)
            reports[pixel_id] = json.loads(out.getvalue())["totals"]
    assert reports["CPIXELEU00001"]["paid"] == 2
    assert reports["CPIXELEU00001"]["recorded"] == 2
    assert reports["CPIXELEU00001"]["missing"] == 0
    assert reports["CPIXELUS00002"]["recorded"] == 1
    assert reports["CPIXELUS00002"]["missing"] == 1


@pytest.mark.django_db
def test_reconcile_of_a_site_s_pixel_counts_only_that_site_s_orders(second_site):
    with site_pixels(second_site):
        order = make_order("C3", paid=True)
        order.site_id = second_site.pk
        pay(order)
        # Orders whose site is unknown go to the pixels of every site only.
        pay(make_order("C4", paid=True))
        totals = {}
        for pixel_id in ("CPIXELUS00002", "CPIXELAG00003", "CPIXELEU00001"):
            out = io.StringIO()
            call_command("tiktok_reconcile", "--pixel", pixel_id, "--format", "json", stdout=out)
            totals[pixel_id] = json.loads(out.getvalue())["totals"]
    # The shop's orders carry no site: a pixel limited to sites counts none of them as paid.
    assert totals["CPIXELUS00002"]["paid"] == 0
    assert totals["CPIXELUS00002"]["recorded"] == 1
    assert totals["CPIXELAG00003"]["paid"] == 2
    assert totals["CPIXELAG00003"]["missing"] == 0
    assert totals["CPIXELEU00001"] == {**totals["CPIXELEU00001"], "paid": 0, "recorded": 0}
