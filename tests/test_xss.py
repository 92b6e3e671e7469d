"""Hostile strings in every value the tags write into a page: none escapes, all round-trip."""

import json
import re
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.template.loader import render_to_string
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.test_template_tags import (
    call_arguments,
    make_request,
    pixel_config,
    render,
    script_bodies,
)
from tiktok_tracking.adapters import adapter_for
from tiktok_tracking.boundaries import storable_text
from tiktok_tracking.events import order_properties, read_order
from tiktok_tracking.receipts import read_receipt_token
from tiktok_tracking.script_json import script_json
from tiktok_tracking.templatetags.tiktok_tracking import _comment, comment_text

HOSTILE = [
    "</script><script>alert(1)</script>",
    "</SCRIPT >",
    "</script",
    "</scr</script>ipt>",
    "<!--",
    "<!--<script>",
    "-->",
    "--!>",
    "]]>",
    "<![CDATA[alert(1)]]>",
    "\"';alert(1)//",
    "'\"><img src=x onerror=alert(1)>",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    "${alert(1)}",
    "`${alert(1)}`",
    "\\",
    "\\\\\\\"\\'",
    "\\u003c/script\\u003e",
    "\\x3c/script\\x3e",
    "\u2028",
    "\u2029",
    "a\u2028b\u2029c",
    "\x00",
    "nul\x00byte",
    "javascript:alert(1)",
    "&lt;/script&gt;",
    "&#60;/script&#62;",
    "</style></title></textarea><script>alert(1)</script>",
    "{{ request }}{% debug %}",
    "\r\n\t\v\f",
    "\ufeffbom",
    "\U0001f600\U0001f6d2 emoji",
    "\u202egnp.exe",
    "x" * 10_000,
    "<" * 500 + "/script>",
    "</script>@example.com",
    "jane@example.com<!--",
    "+1 415</script>555 0100",
]

PIXEL = "{% tiktok_pixel email=hostile phone=hostile external_id=hostile %}"
TRACK = (
    '{% tiktok_track "ViewContent" content_id=hostile content_name=hostile description=hostile '
    "query=hostile %}"
)
TRACK_WITH_EVENT_ID = '{% tiktok_track "Lead" event_id=event_id description=hostile %}'
PURCHASE = "{% tiktok_purchase order %}"
PURCHASE_WITH_SUFFIX = "{% tiktok_purchase order suffix=hostile %}"
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def tiktok_settings(settings):
    def change(**values):
        settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, **values}

    return change


def hostile_order(text, number="1007"):
    """A plain-object order carrying ``text`` in every free-text field."""
    return SimpleNamespace(
        number=number,
        total=Decimal("89.99"),
        currency="USD",
        items=[
            SimpleNamespace(sku=f"sku{text}", name=f"x{text}x", quantity=1, price=Decimal("89.99"))
        ],
        email=text,
        phone=text,
        customer_id=text,
        country="US",
    )


def order_facts(order):
    return read_order(adapter_for(order))


def assert_contained(html, expected_scripts):
    """Every script in ``html`` is one the templates wrote, and none holds a way out of it."""
    openings = len(re.findall(r"<script", html, re.IGNORECASE))
    closings = len(re.findall(r"</script", html, re.IGNORECASE))
    assert openings == closings == html.count("</script>") == expected_scripts
    bodies = script_bodies(html)
    assert len(bodies) == expected_scripts
    for body in bodies:
        assert "<script" not in body.lower()
        assert "</script" not in body.lower()
        assert "<!--" not in body
        assert "\u2028" not in body
        assert "\u2029" not in body
        assert body.isascii()
    # HTML comments (tracking off, order not sent) open and close once each.
    assert html.count("<!--") == html.count("-->")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_pixel_identity_arguments_stay_contained_and_hashed(hostile):
    html = render(PIXEL, make_request(country="US"), hostile=hostile)

    assert_contained(html, 1)
    if "@" in hostile or "+1" in hostile:
        assert call_arguments(html, "ttq.identify")
    for [identity] in call_arguments(html, "ttq.identify"):
        assert all(HEX_DIGEST.fullmatch(value) for value in identity.values())
    # Only digests reach the page, whatever was passed in.
    assert hostile not in "".join(script_bodies(html))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_csp_nonce_cannot_open_a_script(hostile):
    html = render(PIXEL, make_request(country="US", nonce=hostile), hostile="a@b.example")

    assert_contained(html, 1)
    assert "<script nonce=" in html


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_pixel_settings_stay_inside_the_config(tiktok_settings, hostile):
    tiktok_settings(PIXEL_ID=hostile, PIXEL_SCRIPT_URL=hostile)

    html = render(PIXEL, make_request(country="US"), hostile=None)

    assert_contained(html, 1)
    config = pixel_config(html)
    assert config["pixelIds"] == [hostile]
    assert config["scriptUrl"] == hostile


@pytest.mark.parametrize("hostile", HOSTILE)
def test_track_properties_round_trip(hostile):
    html = render(TRACK, make_request(country="US"), hostile=hostile)

    assert_contained(html, 1)
    [[event, properties, _options]] = call_arguments(html, "ttq.track")
    assert event == "ViewContent"
    assert properties == {
        "content_id": hostile,
        "content_name": hostile,
        "description": hostile,
        "query": hostile,
    }


@pytest.mark.parametrize("hostile", HOSTILE)
def test_track_explicit_event_id_round_trips(hostile):
    event_id = f"id{hostile}id"

    html = render(
        TRACK_WITH_EVENT_ID, make_request(country="US"), hostile=hostile, event_id=event_id
    )

    assert_contained(html, 1)
    assert call_arguments(html, "ttq.track") == [
        ["Lead", {"description": hostile}, {"event_id": event_id}]
    ]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_track_with_a_hostile_order_round_trips(hostile):
    order = hostile_order(hostile)

    html = render(
        '{% tiktok_track "InitiateCheckout" order=order %}', make_request(country="US"), order=order
    )

    assert_contained(html, 1)
    [[_event, properties, _options]] = call_arguments(html, "ttq.track")
    # Names reach both lanes storable (no NUL, no lone surrogate): the same text everywhere.
    assert properties["contents"][0]["content_name"] == storable_text(f"x{hostile}x")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_purchase_product_names_and_ids_round_trip(hostile):
    order = hostile_order(hostile)

    html = render(PURCHASE, make_request(country="US"), order=order)

    assert_contained(html, 1)
    [[_event, properties, options]] = call_arguments(html, "ttq.track")
    assert properties == order_properties(order_facts(order))
    [content] = properties["contents"]
    assert content["content_name"] == storable_text(f"x{hostile}x")
    assert content["content_id"] == storable_text(f"sku{hostile}").strip()
    assert options == {"event_id": "order_1007"}


def _valid_order_number(text):
    number = f"n{text}n"
    has_control = any(ord(char) < 32 or 127 <= ord(char) < 160 for char in number)
    return None if has_control or len(number) > 128 else number


@pytest.mark.parametrize(
    "hostile", [text for text in HOSTILE if _valid_order_number(text)], ids=str
)
def test_purchase_order_numbers_round_trip_into_ids_and_receipt(hostile):
    number = _valid_order_number(hostile)
    order = hostile_order(hostile, number=number)

    html = render(PURCHASE, make_request(country="US"), order=order)

    assert_contained(html, 1)
    [[_event, properties, options]] = call_arguments(html, "ttq.track")
    assert properties["order_id"] == number
    assert options == {"event_id": f"order_{number}"}
    [[token]] = call_arguments(html, "window.tiktokTracking.sendReceipt")
    assert read_receipt_token(token) == ("CTESTPIXEL0001", "Purchase", f"order_{number}")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_purchase_with_a_hostile_suffix_is_a_well_formed_comment(hostile):
    html = render(
        PURCHASE_WITH_SUFFIX, make_request(country="US"), order=hostile_order("a"), hostile=hostile
    )

    assert_contained(html, 0)
    assert html == "<!-- TikTok purchase: not sent (invalid order data: event_id_suffix) -->"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_on_the_full_thank_you_page(hostile):
    order = hostile_order(hostile)
    order.number = _valid_order_number(hostile) or "1007"

    html = render_to_string(
        "shop/thanks.html", {"order": order}, request=make_request(country="US")
    )

    assert_contained(html, 2)
    [[_event, properties, _options]] = call_arguments(html, "ttq.track")
    assert properties == order_properties(order_facts(order))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_comments_cannot_be_closed_early(hostile):
    comment = _comment(hostile, "off", hostile)

    assert comment.startswith("<!-- TikTok ")
    assert comment.endswith(") -->")
    inner = comment[len("<!--") : -len("-->")]
    assert "--" not in inner
    assert "<" not in inner
    assert ">" not in inner
    assert "--" not in comment_text(hostile)


def test_the_corpus_is_large_enough():
    assert len(HOSTILE) >= 20


# Property-based: any text at all ---------------------------------------------------------------


@hypothesis_settings(max_examples=200, deadline=None)
@given(name=st.text())
def test_any_product_name_round_trips_and_never_breaks_out(name):
    order = hostile_order("")
    order.items[0].name = name

    html = render(PURCHASE, make_request(country="US"), order=order)

    assert_contained(html, 1)
    [[_event, properties, _options]] = call_arguments(html, "ttq.track")
    assert properties == order_properties(order_facts(order))
    expected_name = storable_text(name).strip()
    if expected_name:
        assert properties["contents"][0]["content_name"] == expected_name
    else:
        assert "content_name" not in properties["contents"][0]


@hypothesis_settings(max_examples=200, deadline=None)
@given(value=st.text(min_size=1))
def test_any_track_property_round_trips_and_never_breaks_out(value):
    html = render(
        '{% tiktok_track "Search" query=value %}', make_request(country="US"), value=value
    )

    assert_contained(html, 1)
    assert call_arguments(html, "ttq.track")[0][1] == {"query": value}


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_script_json_round_trips_and_leaves_nothing_to_end_a_script(value):
    encoded = script_json(value)

    assert json.loads(encoded) == value
    assert encoded.isascii()
    assert not set(encoded) & {"<", ">", "&", "\u2028", "\u2029"}
