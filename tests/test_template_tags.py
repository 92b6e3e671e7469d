"""The browser lane's template tags: pixel, funnel events and purchase, per consent state."""

import json
import re
from decimal import Decimal

import pytest
from django.http import HttpResponse
from django.template import Context, Template, TemplateSyntaxError
from django.template.loader import render_to_string
from django.test import Client, RequestFactory

from tests.shop.models import Order, OrderLine
from tiktok_tracking import conf
from tiktok_tracking.adapters import adapter_for
from tiktok_tracking.events import order_properties, read_order
from tiktok_tracking.hashing import hash_email, hash_external_id, hash_phone
from tiktok_tracking.receipts import read_receipt_token
from tiktok_tracking.script_json import script_json
from tiktok_tracking.templatetags.tiktok_tracking import comment_text
from tiktok_tracking.testing import script_calls as call_arguments
from tiktok_tracking.visitor import CONSENT_COOKIE, get_visitor, set_consent_cookie

PIXEL_ID = "CTESTPIXEL0001"
SCRIPT_BODY = re.compile(r"<script\b[^>]*>(.*?)</script>", re.IGNORECASE | re.DOTALL)
CONFIG_ARGUMENT = re.compile(r"\n\}\((\{.*\})\)\);\n</script>")
RANDOM_EVENT_ID = re.compile(r"evt_[0-9a-f]{32}")


# Helpers (test_xss.py uses them too) ----------------------------------------------------------


def make_request(country=None, consent=None, nonce=None):
    """A GET request as the middleware would leave it, with country and consent cookies."""
    request = RequestFactory().get("/thanks/")
    if country:
        request.COOKIES["country"] = country
    if consent:
        response = HttpResponse()
        set_consent_cookie(response, consent)
        request.COOKIES[CONSENT_COOKIE] = response.cookies[CONSENT_COOKIE].value
    if nonce is not None:
        request.csp_nonce = nonce
    get_visitor(request)
    return request


def render(source, request, **context):
    """``source`` rendered after ``{% load tiktok_tracking %}`` with ``request`` in the context."""
    template = Template("{% load tiktok_tracking %}" + source)
    return template.render(Context({"request": request, **context}))


def script_bodies(html):
    return SCRIPT_BODY.findall(html)


def pixel_config(html):
    """The config object the pixel script passes to its wrapper function."""
    return json.loads(CONFIG_ARGUMENT.search(html).group(1))


def make_order(number="1007", *, currency="USD", lines=(("SKU-123", "Mug", 1, "89.99"),)):
    order = Order.objects.create(
        number=number,
        email="Jane@Example.com",
        phone="+1 415 555 0100",
        country="US",
        currency=currency,
        total=sum((Decimal(price) * quantity for _, _, quantity, price in lines), Decimal(0)),
    )
    for sku, name, quantity, price in lines:
        OrderLine.objects.create(
            order=order, sku=sku, name=name, quantity=quantity, price=Decimal(price)
        )
    return order


def expected_properties(order):
    return order_properties(read_order(adapter_for(order)))


@pytest.fixture
def tiktok_settings(settings):
    """Change TIKTOK_TRACKING keys for one test: ``tiktok_settings(PIXEL_ID=None)``."""

    def change(**values):
        settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, **values}

    return change


# {% tiktok_pixel %} ---------------------------------------------------------------------------


def test_pixel_in_an_opt_out_region_loads_and_sends_the_page_view():
    html = render("{% tiktok_pixel %}", make_request(country="US"))

    assert len(script_bodies(html)) == 1
    config = pixel_config(html)
    # No CSRF token in the page: the script asks the consent endpoint for one when needed.
    assert config == {
        "pixelIds": [PIXEL_ID],
        "scriptUrl": conf.get("PIXEL_SCRIPT_URL"),
        "hold": False,
        "limitedDataUse": False,
        "consentUrl": "/tiktok/consent/",
        "receiptUrl": "/tiktok/receipt/",
    }
    assert f'ttq.load("{PIXEL_ID}");' in html
    assert html.index("ttq.load(") < html.index("ttq.page();")
    assert "ttq.holdConsent()" not in html
    assert "window.tiktokTracking = {" in html


def test_pixel_carries_the_official_base_code():
    html = render("{% tiktok_pixel %}", make_request(country="US"))

    assert "!function (w, d, t) {" in html
    assert '}(window, document, "ttq");' in html
    assert (
        'ttq.methods = ["page", "track", "identify", "instances", "debug", "on", "off", "once", '
        '"ready", "alias", "group", "enableCookie", "disableCookie", "holdConsent", '
        '"revokeConsent", "grantConsent"];'
    ) in html
    assert "ttq.setAndDefer = function (t, e) {" in html
    assert "ttq.instance = function (t) {" in html
    assert 'n.src = r + "?sdkid=" + e + "&lib=" + t;' in html


def test_opt_in_region_without_a_choice_holds_consent_before_load_then_page():
    html = render("{% tiktok_pixel %}", make_request(country="DE"))

    hold, load, page = (html.index(s) for s in ("ttq.holdConsent();", "ttq.load(", "ttq.page();"))
    assert hold < load < page
    assert f'ttq.load("{PIXEL_ID}");' in html
    assert pixel_config(html)["hold"] is True


def test_unknown_country_counts_as_opt_in():
    html = render("{% tiktok_pixel %}", make_request())

    assert "ttq.holdConsent();" in html


def test_opt_in_region_with_consent_granted_loads_without_holding():
    html = render("{% tiktok_pixel %}", make_request(country="DE", consent="granted"))

    assert "ttq.holdConsent()" not in html
    assert f'ttq.load("{PIXEL_ID}");' in html
    assert pixel_config(html)["hold"] is False


def test_opt_in_region_with_consent_denied_renders_only_a_comment():
    html = render("{% tiktok_pixel %}", make_request(country="DE", consent="denied"))

    assert html == "<!-- TikTok pixel: off (consent denied (DE)) -->"


def test_us_visitor_who_denied_gets_limited_data_use():
    html = render("{% tiktok_pixel %}", make_request(country="US", consent="denied"))

    assert f'ttq.load("{PIXEL_ID}", {{limited_data_use: true}});' in html
    assert pixel_config(html)["limitedDataUse"] is True
    assert "ttq.holdConsent()" not in html


def test_no_pixel_id_renders_only_a_comment(tiktok_settings):
    tiktok_settings(PIXEL_ID=None)

    html = render("{% tiktok_pixel %}", make_request(country="US"))

    assert html == "<!-- TikTok pixel: off (no PIXEL_ID set) -->"


def test_no_request_in_the_context_renders_only_a_comment():
    html = Template("{% load tiktok_tracking %}{% tiktok_pixel %}").render(Context({}))

    assert html == "<!-- TikTok pixel: off (no request in template context) -->"


def test_csp_nonce_is_put_on_the_script():
    html = render("{% tiktok_pixel %}", make_request(country="US", nonce="n0Nce42"))

    assert html.startswith('<script nonce="n0Nce42">')


def test_no_nonce_attribute_without_csp():
    html = render("{% tiktok_pixel %}", make_request(country="US"))

    assert html.startswith("<script>")


def test_pixel_works_without_the_app_urls(settings):
    class NoTikTokUrls:
        urlpatterns = []

    settings.ROOT_URLCONF = NoTikTokUrls

    config = pixel_config(render("{% tiktok_pixel %}", make_request(country="US")))

    assert config["consentUrl"] is None
    assert config["receiptUrl"] is None
    assert config["pixelIds"] == [PIXEL_ID]


def test_identify_sends_only_hashed_keys():
    html = render(
        "{% tiktok_pixel email=email phone=phone external_id=customer_id %}",
        make_request(country="US"),
        email=" Jane@Example.com ",
        phone="+1 (415) 555-0100",
        customer_id=42,
    )

    assert call_arguments(html, "ttq.identify") == [
        [
            {
                "sha256_email": hash_email("jane@example.com"),
                "sha256_phone_number": hash_phone("+14155550100"),
                "external_id": hash_external_id("42"),
            }
        ]
    ]
    assert "jane@example.com" not in html.lower()
    assert "555" not in html
    assert html.index("ttq.page();") < html.index("ttq.identify(")


def test_identify_leaves_out_keys_without_a_value():
    html = render(
        "{% tiktok_pixel email=email phone=missing %}",
        make_request(country="US"),
        email="jane@example.com",
    )

    assert call_arguments(html, "ttq.identify") == [
        [{"sha256_email": hash_email("jane@example.com")}]
    ]


def test_no_identify_without_a_known_customer():
    html = render("{% tiktok_pixel email=missing %}", make_request(country="US"))

    assert "ttq.identify(" not in html


def test_no_identify_while_consent_is_on_hold():
    html = render(
        "{% tiktok_pixel email=email %}", make_request(country="DE"), email="jane@example.com"
    )

    assert "ttq.holdConsent();" in html
    assert "ttq.identify(" not in html
    assert hash_email("jane@example.com") not in html


def test_pixel_rejects_unknown_arguments_at_compile_time():
    with pytest.raises(TemplateSyntaxError):
        Template("{% load tiktok_tracking %}{% tiktok_pixel mail=customer.email %}")


# {% tiktok_track %} ---------------------------------------------------------------------------


def test_track_renders_properties_and_a_random_event_id():
    html = render(
        '{% tiktok_track "ViewContent" content_id=product.pk content_name=product.name '
        'value=product.price currency="EUR" content_type="product" %}',
        make_request(country="US"),
        product={"pk": 7, "name": "Mug", "price": Decimal("12.50")},
    )

    [[event, properties, options]] = call_arguments(html, "ttq.track")
    assert event == "ViewContent"
    assert properties == {
        "content_id": "7",
        "content_name": "Mug",
        "value": 12.5,
        "currency": "EUR",
        "content_type": "product",
    }
    assert RANDOM_EVENT_ID.fullmatch(options["event_id"])
    assert set(options) == {"event_id"}
    assert "if (window.ttq) {" in html
    assert '"value":12.5' in html


def test_track_random_event_ids_differ_between_renders():
    source = '{% tiktok_track "AddToCart" %}'
    first = call_arguments(render(source, make_request(country="US")), "ttq.track")
    second = call_arguments(render(source, make_request(country="US")), "ttq.track")

    assert first[0][2]["event_id"] != second[0][2]["event_id"]
    assert first[0][:2] == ["AddToCart", {}]


def test_track_takes_an_explicit_event_id():
    html = render(
        '{% tiktok_track "Lead" event_id=lead_id %}', make_request(country="US"), lead_id=912
    )

    assert call_arguments(html, "ttq.track") == [["Lead", {}, {"event_id": "912"}]]


def test_track_leaves_out_empty_properties():
    html = render(
        '{% tiktok_track "Search" query=q description=missing %}',
        make_request(country="US"),
        q="mugs",
    )

    assert call_arguments(html, "ttq.track")[0][1] == {"query": "mugs"}


def test_track_renders_the_nonce():
    html = render('{% tiktok_track "ViewContent" %}', make_request(country="US", nonce="abc"))

    assert html.startswith('<script nonce="abc">')


@pytest.mark.django_db
def test_track_with_an_order_uses_the_server_lanes_event_id_and_properties():
    order = make_order("2001")

    html = render(
        '{% tiktok_track "InitiateCheckout" order=order %}', make_request(country="US"), order=order
    )

    [[event, properties, options]] = call_arguments(html, "ttq.track")
    assert event == "InitiateCheckout"
    assert options == {"event_id": "order_2001_initiatecheckout"}
    assert properties == expected_properties(order)


@pytest.mark.django_db
def test_track_with_an_order_and_invalid_order_data_renders_a_comment():
    order = make_order("2002", currency="XXX")

    html = render(
        '{% tiktok_track "InitiateCheckout" order=order %}', make_request(country="US"), order=order
    )

    assert html == "<!-- TikTok InitiateCheckout: not sent (invalid order data: currency) -->"


def test_track_with_an_invalid_value_renders_a_comment():
    html = render(
        '{% tiktok_track "AddToCart" value="lots" %}', make_request(country="US"), order=None
    )

    assert html == "<!-- TikTok AddToCart: not sent (invalid property: value) -->"


def test_track_with_a_property_json_cannot_carry_renders_a_comment():
    html = render(
        '{% tiktok_track "AddToCart" description=thing %}',
        make_request(country="US"),
        thing=object(),
    )

    assert html == "<!-- TikTok AddToCart: not sent (a property cannot be sent as JSON) -->"


def test_track_is_only_a_comment_when_consent_is_denied():
    html = render(
        '{% tiktok_track "ViewContent" content_name="Mug" %}',
        make_request(country="DE", consent="denied"),
    )

    assert html == "<!-- TikTok ViewContent: not sent (consent denied (DE)) -->"


def test_track_is_queued_while_consent_is_on_hold():
    html = render('{% tiktok_track "ViewContent" %}', make_request(country="DE"))

    assert call_arguments(html, "ttq.track")[0][0] == "ViewContent"


def test_track_without_a_pixel_id_is_only_a_comment(tiktok_settings):
    tiktok_settings(PIXEL_ID="")

    html = render('{% tiktok_track "ViewContent" %}', make_request(country="US"))

    assert html == "<!-- TikTok ViewContent: not sent (no PIXEL_ID set) -->"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{% tiktok_track "ViewProduct" %}', "not a TikTok standard event"),
        ("{% tiktok_track %}", "needs an event name"),
        ("{% tiktok_track event_name %}", "quoted literal"),
        ('{% tiktok_track "Purchase" %}', "tiktok_purchase"),
        ('{% tiktok_track "CompletePayment" %}', "tiktok_purchase"),
        ('{% tiktok_track "ViewContent" product.name %}', "key=value"),
        ('{% tiktok_track "ViewContent" value=1 value=2 %}', "twice"),
        ('{% tiktok_track "InitiateCheckout" order=order event_id="x" %}', "not both"),
    ],
)
def test_track_is_checked_when_the_template_is_compiled(source, message):
    with pytest.raises(TemplateSyntaxError, match=message):
        Template("{% load tiktok_tracking %}" + source)


def test_track_accepts_legacy_names_tiktok_still_converts():
    html = render('{% tiktok_track "SubmitForm" %}', make_request(country="US"))

    assert call_arguments(html, "ttq.track")[0][0] == "SubmitForm"


# {% tiktok_purchase %} ------------------------------------------------------------------------


@pytest.mark.django_db
def test_purchase_sends_the_server_lanes_properties_event_id_and_a_receipt():
    order = make_order(
        "1007", lines=(("SKU-123", "Mug", 2, "10.00"), ("SKU-456", "Saucer", 1, "5.50"))
    )

    html = render("{% tiktok_purchase order %}", make_request(country="US"), order=order)

    [[event, properties, options]] = call_arguments(html, "ttq.track")
    assert event == "Purchase"
    assert properties == expected_properties(order)
    assert properties["value"] == 25.5
    assert properties["contents"][0] == {
        "content_id": "SKU-123",
        "content_name": "Mug",
        "quantity": 2,
        "price": 10.0,
    }
    assert options == {"event_id": "order_1007"}
    [[token]] = call_arguments(html, "window.tiktokTracking.sendReceipt")
    assert read_receipt_token(token) == (PIXEL_ID, "Purchase", "order_1007")
    assert html.index("ttq.track(") < html.index("sendReceipt(")


@pytest.mark.django_db
def test_purchase_event_name_comes_from_the_setting(tiktok_settings):
    tiktok_settings(PURCHASE_EVENT="CompletePayment")
    order = make_order("1008")

    html = render("{% tiktok_purchase order %}", make_request(country="US"), order=order)

    [[event, _properties, options]] = call_arguments(html, "ttq.track")
    assert event == "CompletePayment"
    assert options == {"event_id": "order_1008"}
    [[token]] = call_arguments(html, "window.tiktokTracking.sendReceipt")
    assert read_receipt_token(token) == (PIXEL_ID, "CompletePayment", "order_1008")


@pytest.mark.django_db
def test_purchase_reload_renders_the_same_event():
    order = make_order("1009")

    first = render("{% tiktok_purchase order %}", make_request(country="US"), order=order)
    second = render("{% tiktok_purchase order %}", make_request(country="US"), order=order)

    assert call_arguments(first, "ttq.track") == call_arguments(second, "ttq.track")


@pytest.mark.django_db
def test_purchase_with_a_suffix_for_a_second_charge():
    order = make_order("1010")

    html = render(
        '{% tiktok_purchase order suffix="upsell_1" %}', make_request(country="US"), order=order
    )

    assert call_arguments(html, "ttq.track")[0][2] == {"event_id": "order_1010_upsell_1"}


@pytest.mark.django_db
def test_purchase_with_invalid_order_data_renders_a_comment_naming_the_field():
    order = make_order("1011", currency="XXX")

    html = render("{% tiktok_purchase order %}", make_request(country="US"), order=order)

    assert html == "<!-- TikTok purchase: not sent (invalid order data: currency) -->"


@pytest.mark.django_db
def test_purchase_with_an_invalid_suffix_renders_a_comment():
    order = make_order("1012")

    html = render(
        "{% tiktok_purchase order suffix=bad %}", make_request(country="US"), order=order, bad=""
    )

    assert html == "<!-- TikTok purchase: not sent (invalid order data: event_id_suffix) -->"


def test_purchase_of_a_missing_order_renders_a_comment():
    html = render("{% tiktok_purchase order %}", make_request(country="US"))

    assert html == "<!-- TikTok purchase: not sent (no order in template context) -->"


def test_track_with_a_missing_order_renders_a_comment():
    html = render('{% tiktok_track "InitiateCheckout" order=order %}', make_request(country="US"))

    assert html == "<!-- TikTok InitiateCheckout: not sent (no order in template context) -->"


def test_purchase_with_a_broken_adapter_setting_renders_a_comment(tiktok_settings, caplog):
    tiktok_settings(ORDER_ADAPTER="tests.shop.adapters.NoSuchAdapter")

    html = render("{% tiktok_purchase order %}", make_request(country="US"), order=object())

    assert html == "<!-- TikTok purchase: not sent (the order could not be read, see the log) -->"
    assert "ORDER_ADAPTER" in caplog.text


@pytest.mark.django_db
def test_purchase_is_only_a_comment_when_consent_is_denied():
    order = make_order("1013")

    html = render(
        "{% tiktok_purchase order %}", make_request(country="DE", consent="denied"), order=order
    )

    assert html == "<!-- TikTok purchase: not sent (consent denied (DE)) -->"


@pytest.mark.django_db
def test_purchase_is_queued_with_its_receipt_while_consent_is_on_hold():
    order = make_order("1014")

    html = render("{% tiktok_purchase order %}", make_request(country="DE"), order=order)

    assert call_arguments(html, "ttq.track")[0][2] == {"event_id": "order_1014"}
    assert len(call_arguments(html, "window.tiktokTracking.sendReceipt")) == 1


@pytest.mark.django_db
def test_purchase_renders_the_nonce():
    order = make_order("1015")

    html = render(
        "{% tiktok_purchase order %}", make_request(country="US", nonce="xyz"), order=order
    )

    assert html.startswith('<script nonce="xyz">')


# The shop's thank-you page, served through the middleware -------------------------------------


@pytest.mark.django_db
def test_thank_you_page_renders_pixel_then_purchase():
    make_order("3001")
    client = Client()
    client.cookies["country"] = "US"

    html = client.get("/thanks/3001/").content.decode()

    assert len(script_bodies(html)) == 2
    assert html.index("ttq.page();") < html.index("ttq.track(")
    assert call_arguments(html, "ttq.track")[0][2] == {"event_id": "order_3001"}


@pytest.mark.django_db
def test_thank_you_page_after_a_grant_through_the_consent_endpoint():
    make_order("3002")
    client = Client()
    client.cookies["country"] = "DE"
    held = client.get("/thanks/3002/").content.decode()

    answer = client.post("/tiktok/consent/", {"status": "granted", "source": "banner"})
    granted = client.get("/thanks/3002/").content.decode()

    assert "ttq.holdConsent();" in held
    assert answer.json()["allowed"] is True
    assert "ttq.holdConsent()" not in granted
    assert call_arguments(granted, "ttq.track")[0][2] == {"event_id": "order_3002"}


@pytest.mark.django_db
def test_thank_you_page_after_a_denial_is_comments_only():
    make_order("3003")
    client = Client()
    client.cookies["country"] = "DE"

    client.post("/tiktok/consent/", {"status": "denied"})
    html = client.get("/thanks/3003/").content.decode()

    assert "<script" not in html
    assert "<!-- TikTok pixel: off (consent denied (DE)) -->" in html
    assert "<!-- TikTok purchase: not sent (consent denied (DE)) -->" in html


@pytest.mark.django_db
def test_thank_you_template_rendered_with_render_to_string():
    order = make_order("3004")

    html = render_to_string(
        "shop/thanks.html", {"order": order}, request=make_request(country="US")
    )

    assert len(script_bodies(html)) == 2


# Pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("consent denied (DE)", "consent denied (DE)"),
        ("a --> b", "a - b"),
        ("x--!>y", "x-!y"),
        ("<!-- ---- -->", "!- - -"),
    ],
)
def test_comment_text_cannot_close_the_comment(text, expected):
    assert comment_text(text) == expected


def test_script_json_escapes_what_could_end_the_script():
    encoded = script_json({"name": "</script><!--&\u2028\u2029é"})

    assert encoded == '{"name":"\\u003C/script\\u003E\\u003C!--\\u0026\\u2028\\u2029\\u00e9"}'
    assert json.loads(encoded) == {"name": "</script><!--&\u2028\u2029é"}


def test_script_json_encodes_decimals_as_numbers():
    assert script_json({"value": Decimal("89.99"), "ids": ("a", 1)}) == (
        '{"value":89.99,"ids":["a",1]}'
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Decimal("NaN"), Decimal("-Inf")])
def test_script_json_rejects_non_finite_numbers(value):
    with pytest.raises(ValueError):
        script_json({"value": value})


def test_script_json_rejects_what_json_cannot_represent():
    with pytest.raises(TypeError):
        script_json({"when": object()})
