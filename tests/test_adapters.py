"""Tests of the order validators, the default order adapter and loading a shop's adapter."""

import math
import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.factories import assert_rejected, make_order
from tiktok_tracking.adapters import (
    ISO_3166_ALPHA2_CODES,
    ISO_4217_CODES,
    OrderAdapter,
    clean_contents,
    clean_country,
    clean_currency,
    clean_order_id,
    clean_value,
    get_adapter_class,
)
from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured


class ShopAdapter(OrderAdapter):
    """A shop's adapter that reads its own attribute names."""

    def order_id(self):
        return self.order.reference

    def currency(self):
        return "eur"


class FakeRelatedManager:
    """Stands in for a Django related manager: not iterable itself, ``.all()`` gives the rows."""

    def __init__(self, rows):
        self.rows = rows

    def all(self):
        return list(self.rows)


# clean_order_id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1007, "1007"),
        ("  A-1007 ", "A-1007"),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        ("x" * 128, "x" * 128),
        ("Order 7", "Order 7"),
    ],
)
def test_clean_order_id_accepts_strings_integers_and_uuids(raw, expected):
    assert clean_order_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [None, True, False, 10.5, Decimal(1), "", "   ", "x" * 129, "10\x0007", "10\n07", b"1007"],
)
def test_clean_order_id_rejects_junk(raw):
    assert_rejected(lambda: clean_order_id(raw), "order_id")


# clean_value ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (Decimal("89.99"), Decimal("89.99")),
        (90, Decimal(90)),
        (89.99, Decimal("89.99")),
        (" 12.50 ", Decimal("12.50")),
        ("0", Decimal(0)),
        (0, Decimal(0)),
        (10**12, Decimal(10**12)),
        ("1e3", Decimal(1000)),
    ],
)
def test_clean_value_accepts_numbers(raw, expected):
    assert clean_value(raw) == expected
    assert isinstance(clean_value(raw), Decimal)


def test_clean_value_drops_the_sign_of_negative_zero():
    assert str(clean_value(Decimal("-0.00"))) == "0.00"
    assert math.copysign(1, float(clean_value("-0"))) == 1


@pytest.mark.parametrize(
    "raw",
    [
        True,
        False,
        math.nan,
        math.inf,
        -math.inf,
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        "nan",
        "inf",
        "-Infinity",
        -1,
        Decimal("-0.01"),
        "-5",
        10**12 + 1,
        Decimal("1000000000000.01"),
        "12,50",
        "",
        "abc",
        None,
        [1],
    ],
)
def test_clean_value_rejects_junk_naming_the_field(raw):
    assert_rejected(lambda: clean_value(raw), "value")


def test_clean_value_names_the_given_field():
    assert_rejected(lambda: clean_value(-1, field="contents.3.price"), "contents.3.price")


@given(
    amount=st.decimals(
        min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False, places=2
    )
)
def test_clean_value_round_trips_decimals_and_their_strings(amount):
    assert clean_value(amount) == amount
    assert clean_value(str(amount)) == amount


@given(amount=st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_clean_value_round_trips_floats(amount):
    assert float(clean_value(amount)) == amount


@given(amount=st.one_of(st.floats(max_value=-1e-9), st.integers(max_value=-1)))
def test_clean_value_rejects_every_negative_number(amount):
    assert_rejected(lambda: clean_value(amount), "value")


# clean_currency ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("USD", "USD"), (" eur ", "EUR"), ("jpy", "JPY")])
def test_clean_currency_uppercases_active_codes(raw, expected):
    assert clean_currency(raw) == expected


@pytest.mark.parametrize("raw", ["ABC", "US", "USDT", "HRK", "", "$", None, 840])
def test_clean_currency_rejects_unknown_codes(raw):
    assert_rejected(lambda: clean_currency(raw), "currency")


@given(code=st.sampled_from(sorted(ISO_4217_CODES)))
def test_every_active_currency_round_trips_in_any_case(code):
    assert clean_currency(code.lower()) == code
    assert clean_currency(f" {code} ") == code


@given(code=st.text(min_size=1, max_size=5))
def test_clean_currency_accepts_nothing_outside_the_list(code):
    if code.strip().upper() in ISO_4217_CODES:
        assert clean_currency(code) == code.strip().upper()
    else:
        assert_rejected(lambda: clean_currency(code), "currency")


def test_currency_list_holds_the_active_codes():
    assert {"USD", "EUR", "JPY", "GBP", "CNY", "BRL", "VES", "ZWG", "XCG", "SLE"} <= ISO_4217_CODES
    # Withdrawn codes are not active.
    assert not {"HRK", "VEF", "BYR", "MRO", "STD", "LTL"} & ISO_4217_CODES
    assert all(len(code) == 3 and code.isalpha() and code.isupper() for code in ISO_4217_CODES)


# clean_country ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("US", "US"), (" de ", "DE"), (None, None), ("", None), ("  ", None)]
)
def test_clean_country(raw, expected):
    assert clean_country(raw) == expected


@pytest.mark.parametrize("raw", ["USA", "XX", "U", "Germany", 840])
def test_clean_country_rejects_anything_but_alpha2(raw):
    assert_rejected(lambda: clean_country(raw), "country")


def test_country_list_holds_the_249_assigned_codes():
    assert len(ISO_3166_ALPHA2_CODES) == 249
    assert {"US", "DE", "GB", "SS", "XK"} - ISO_3166_ALPHA2_CODES == {"XK"}


# clean_contents ---------------------------------------------------------------------------


def test_clean_contents_normalises_items():
    items = [
        {"content_id": " SKU-1 ", "content_name": " Mug ", "quantity": 2, "price": "4.50"},
        {"content_id": 77, "price": 3, "extra": "ignored"},
        {"content_id": "SKU-3", "content_name": "", "quantity": Decimal("3.000"), "price": 0.1},
    ]
    assert clean_contents(items) == [
        {"content_id": "SKU-1", "content_name": "Mug", "quantity": 2, "price": Decimal("4.50")},
        {"content_id": "77", "content_name": None, "quantity": 1, "price": Decimal(3)},
        {"content_id": "SKU-3", "content_name": None, "quantity": 3, "price": Decimal("0.1")},
    ]


def test_clean_contents_accepts_no_items():
    assert clean_contents(None) == []
    assert clean_contents([]) == []
    assert clean_contents(iter([])) == []


def good_item(**overrides):
    return {"content_id": "SKU-1", "quantity": 1, "price": "1.00", **overrides}


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ("SKU-1", "contents"),
        ({"content_id": "SKU-1"}, "contents"),
        (7, "contents"),
        ([good_item(), "SKU-2"], "contents.1"),
        ([good_item(content_id="")], "contents.0.content_id"),
        ([good_item(content_id=None)], "contents.0.content_id"),
        ([good_item(content_id=True)], "contents.0.content_id"),
        ([good_item(content_id=1.5)], "contents.0.content_id"),
        ([good_item(content_name=5)], "contents.0.content_name"),
        ([good_item(quantity=0)], "contents.0.quantity"),
        ([good_item(quantity=-2)], "contents.0.quantity"),
        ([good_item(quantity=1.5)], "contents.0.quantity"),
        ([good_item(quantity=True)], "contents.0.quantity"),
        ([good_item(quantity="two")], "contents.0.quantity"),
        ([good_item(), good_item(price=-1)], "contents.1.price"),
        ([good_item(price=math.nan)], "contents.0.price"),
        ([good_item(price=True)], "contents.0.price"),
        ([good_item(price=None)], "contents.0.price"),
        ([{"content_id": "SKU-1"}], "contents.0.price"),
    ],
)
def test_clean_contents_rejects_junk_naming_the_item_and_field(items, field):
    assert_rejected(lambda: clean_contents(items), field)


# OrderAdapter -----------------------------------------------------------------------------


def test_default_adapter_reads_a_plain_order():
    order = make_order()
    adapter = OrderAdapter(order)
    assert adapter.order is order
    assert adapter.order_id() == "1007"
    assert adapter.value() == Decimal("89.99")
    assert adapter.currency() == "USD"
    assert adapter.contents() == [
        {"content_id": "SKU-123", "content_name": "Mug", "quantity": 1, "price": Decimal("89.99")}
    ]
    assert adapter.email() == "Jane@Example.com"
    assert adapter.phone() == "+1 (415) 555-0100"
    assert adapter.external_id() == "42"
    assert adapter.country() == "US"


def test_default_adapter_returns_none_for_unknown_optional_facts():
    order = SimpleNamespace(pk=5, amount=10, currency="EUR")
    adapter = OrderAdapter(order)
    assert adapter.order_id() == "5"
    assert adapter.value() == Decimal(10)
    assert adapter.contents() == []
    assert adapter.email() is None
    assert adapter.phone() is None
    assert adapter.external_id() is None
    assert adapter.country() is None


def test_blank_optional_fields_count_as_unknown():
    adapter = OrderAdapter(make_order(email="", phone="  ", customer_id="", country=""))
    assert adapter.email() is None
    assert adapter.phone() is None
    assert adapter.external_id() is None
    assert adapter.country() is None


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"order_id": "A-1", "number": "N-1", "pk": 1}, "A-1"),
        ({"number": "N-1", "pk": 1}, "N-1"),
        ({"number": "", "pk": 1}, "1"),
        ({"pk": 1}, "1"),
    ],
)
def test_order_id_falls_back_through_common_names(attributes, expected):
    assert OrderAdapter(SimpleNamespace(**attributes)).order_id() == expected


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"total": 1, "value": 2, "amount": 3}, 1),
        ({"value": 2, "amount": 3}, 2),
        ({"amount": 3}, 3),
    ],
)
def test_value_falls_back_through_common_names(attributes, expected):
    assert OrderAdapter(SimpleNamespace(**attributes)).value() == Decimal(expected)


def test_value_of_zero_is_a_value():
    assert OrderAdapter(make_order(total=0)).value() == Decimal(0)


def test_phone_external_id_and_country_fall_back_through_common_names():
    order = SimpleNamespace(phone_number="+14155550100", user_id=9, country_code="fr")
    adapter = OrderAdapter(order)
    assert adapter.phone() == "+14155550100"
    assert adapter.external_id() == "9"
    assert adapter.country() == "FR"


def test_country_objects_with_a_code_are_read_by_code():
    adapter = OrderAdapter(make_order(country=SimpleNamespace(code="nl", name="Netherlands")))
    assert adapter.country() == "NL"


def test_contents_are_read_from_a_related_manager_at_lines():
    line = SimpleNamespace(content_id="C-1", title="Tea", quantity=3, unit_price="2.50")
    order = make_order(items=None, lines=FakeRelatedManager([line]))
    assert OrderAdapter(order).contents() == [
        {"content_id": "C-1", "content_name": "Tea", "quantity": 3, "price": Decimal("2.50")}
    ]


def test_contents_are_read_from_a_method():
    line = SimpleNamespace(sku="S-1", quantity=1, price=1)
    order = make_order(items=lambda: [line])
    assert OrderAdapter(order).contents()[0]["content_id"] == "S-1"


def test_line_falls_back_to_its_product():
    product = SimpleNamespace(pk=31, sku="P-SKU", name="Kettle")
    line = SimpleNamespace(product=product, product_id=31, price=Decimal("20.00"))
    content = OrderAdapter(make_order(items=[line])).contents()[0]
    assert content == {
        "content_id": "P-SKU",
        "content_name": "Kettle",
        "quantity": 1,
        "price": Decimal("20.00"),
    }


def test_line_without_skus_uses_the_product_key():
    line = SimpleNamespace(product=SimpleNamespace(pk=31), product_id=31, price=1)
    assert OrderAdapter(make_order(items=[line])).contents()[0]["content_id"] == "31"
    line = SimpleNamespace(product=SimpleNamespace(pk=32), price=1)
    assert OrderAdapter(make_order(items=[line])).contents()[0]["content_id"] == "32"


def test_line_unit_price_wins_over_price():
    line = SimpleNamespace(sku="S", quantity=2, unit_price=5, price=10)
    assert OrderAdapter(make_order(items=[line])).contents()[0]["price"] == Decimal(5)


@pytest.mark.parametrize(
    ("overrides", "method", "field"),
    [
        ({"order_id": None}, "order_id", "order_id"),
        ({"order_id": "bad\x07id"}, "order_id", "order_id"),
        ({"total": None}, "value", "value"),
        ({"total": "NaN"}, "value", "value"),
        ({"total": -5}, "value", "value"),
        ({"currency": None}, "currency", "currency"),
        ({"currency": "ABC"}, "currency", "currency"),
        ({"country": "USA"}, "country", "country"),
        ({"items": [SimpleNamespace(sku="S", price=-1)]}, "contents", "contents.0.price"),
        ({"items": [SimpleNamespace(price=1)]}, "contents", "contents.0.content_id"),
    ],
)
def test_default_adapter_rejects_invalid_orders_naming_the_field(overrides, method, field):
    adapter = OrderAdapter(make_order(**overrides))
    assert_rejected(getattr(adapter, method), field)


def test_a_subclass_overrides_what_does_not_fit():
    adapter = ShopAdapter(make_order(reference="R-9"))
    assert adapter.order_id() == "R-9"
    assert adapter.currency() == "eur"
    assert adapter.value() == Decimal("89.99")


# get_adapter_class ------------------------------------------------------------------------


def test_get_adapter_class_imports_the_default_and_subclasses():
    assert get_adapter_class("tiktok_tracking.adapters.OrderAdapter") is OrderAdapter
    assert get_adapter_class("tests.test_adapters.ShopAdapter") is ShopAdapter


@pytest.mark.parametrize(
    "dotted_path",
    [
        "tests.test_adapters.NoSuchAdapter",
        "no_such_module.Adapter",
        "OrderAdapter",
        "",
        None,
        "tiktok_tracking.adapters.clean_value",
        "types.SimpleNamespace",
    ],
)
def test_get_adapter_class_names_the_setting_when_it_cannot_load(dotted_path):
    with pytest.raises(TikTokTrackingImproperlyConfigured, match="ORDER_ADAPTER"):
        get_adapter_class(dotted_path)
