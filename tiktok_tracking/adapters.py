"""Order adapters: how the app reads a shop's order, and the validators every value passes."""

import math
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation

from django.utils.module_loading import import_string

from tiktok_tracking import conf
from tiktok_tracking.boundaries import storable_text
from tiktok_tracking.exceptions import InvalidOrderData, TikTokTrackingImproperlyConfigured
from tiktok_tracking.standards import ISO_3166_ALPHA2_CODES, ISO_4217_CODES

ORDER_ID_MAX_LENGTH = 128
# No real order is worth a trillion: a bigger value is a unit mix-up, not a sale.
VALUE_MAX = Decimal(10**12)


# Validators -------------------------------------------------------------------------------


def clean_order_id(value) -> str:
    """``value`` (a string, integer or UUID) as the stripped string TikTok expects."""
    # bool is an int subclass, and True would silently become order "True".
    if isinstance(value, bool) or not isinstance(value, (str, int, uuid.UUID)):
        raise InvalidOrderData(
            "order_id", f"must be a string, integer or UUID, not {type(value).__name__}"
        )
    order_id = str(value).strip()
    if not order_id:
        raise InvalidOrderData("order_id", "must not be empty")
    if len(order_id) > ORDER_ID_MAX_LENGTH:
        raise InvalidOrderData(
            "order_id", f"must be at most {ORDER_ID_MAX_LENGTH} characters, not {len(order_id)}"
        )
    # Control characters and lone surrogates (Cs) could be neither sent nor stored.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in order_id):
        raise InvalidOrderData("order_id", "must not contain control characters or surrogates")
    return order_id


def clean_value(value, *, field: str = "value") -> Decimal:
    """``value`` as a finite Decimal from 0 to 10**12; ``field`` names it in errors."""
    if isinstance(value, bool):
        raise InvalidOrderData(field, "must be a number, not a boolean")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidOrderData(field, f"must be a finite number, not {value!r}")
        # Through str so that 89.99 stays 89.99 rather than its binary approximation.
        amount = Decimal(str(value))
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidOrderData(field, f"{value!r} is not a number") from None
    else:
        raise InvalidOrderData(field, f"must be a number, not {type(value).__name__}")
    if not amount.is_finite():
        raise InvalidOrderData(field, f"must be a finite number, not {amount}")
    if amount < 0:
        raise InvalidOrderData(field, f"must not be negative, got {amount}")
    if amount > VALUE_MAX:
        raise InvalidOrderData(field, f"must be at most 10**12, got {amount}")
    # copy_abs turns Decimal("-0") into Decimal("0"), which would otherwise be sent as -0.0.
    return amount.copy_abs()


def clean_currency(value) -> str:
    """``value`` as an uppercase active ISO 4217 code."""
    if not isinstance(value, str):
        raise InvalidOrderData(
            "currency", f"must be an ISO 4217 code string, not {type(value).__name__}"
        )
    currency = value.strip().upper()
    if currency not in ISO_4217_CODES:
        raise InvalidOrderData("currency", f"{value!r} is not an active ISO 4217 currency code")
    return currency


def clean_country(value) -> str | None:
    """``value`` as an uppercase ISO 3166-1 alpha-2 code; None (or blank) stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOrderData(
            "country", f"must be an ISO 3166-1 alpha-2 code string, not {type(value).__name__}"
        )
    country = value.strip().upper()
    # Django stores an unset CharField as "", which means unknown, not invalid.
    if not country:
        return None
    if country not in ISO_3166_ALPHA2_CODES:
        raise InvalidOrderData("country", f"{value!r} is not an ISO 3166-1 alpha-2 code")
    return country


def _clean_content_id(value, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidOrderData(field, f"must be a string or integer, not {type(value).__name__}")
    content_id = storable_text(value).strip()
    if not content_id:
        raise InvalidOrderData(field, "must not be empty")
    return content_id


def _clean_content_name(value, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOrderData(field, f"must be a string, not {type(value).__name__}")
    # A NUL or a lone surrogate in a product name must not cost the order its event.
    return storable_text(value).strip() or None


def _clean_quantity(value, field: str) -> int:
    if value is None:
        return 1
    if isinstance(value, bool):
        raise InvalidOrderData(field, "must be a whole number, not a boolean")
    if isinstance(value, int):
        quantity = value
    else:
        # Some shops keep quantities in DecimalFields: 2.000 is fine, 1.5 is not.
        as_decimal = clean_value(value, field=field)
        if as_decimal != as_decimal.to_integral_value():
            raise InvalidOrderData(field, f"must be a whole number, not {value!r}")
        quantity = int(as_decimal)
    if quantity < 1:
        raise InvalidOrderData(field, f"must be at least 1, got {quantity}")
    return quantity


def clean_contents(items) -> list[dict]:
    """``items`` as a list of ``{content_id, content_name, quantity, price}`` dicts.

    ``price`` is the unit price. A missing quantity counts as 1; None means no items.
    """
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise InvalidOrderData("contents", f"must be a list of items, not {type(items).__name__}")
    cleaned = []
    for index, item in enumerate(items):
        prefix = f"contents.{index}"
        if not isinstance(item, Mapping):
            raise InvalidOrderData(prefix, f"must be a mapping, not {type(item).__name__}")
        if item.get("price") is None:
            raise InvalidOrderData(f"{prefix}.price", "is required")
        cleaned.append(
            {
                "content_id": _clean_content_id(item.get("content_id"), f"{prefix}.content_id"),
                "content_name": _clean_content_name(
                    item.get("content_name"), f"{prefix}.content_name"
                ),
                "quantity": _clean_quantity(item.get("quantity"), f"{prefix}.quantity"),
                "price": clean_value(item["price"], field=f"{prefix}.price"),
            }
        )
    return cleaned


# The adapter ----------------------------------------------------------------------------------


def _first_present(obj, names):
    """The first of ``obj``'s attributes ``names`` that exists and is neither None nor ""."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None and value != "":
            return value
    return None


def _optional_string(value) -> str | None:
    if value is None:
        return None
    text = storable_text(value).strip()
    return text or None


class OrderAdapter:
    """Reads the facts TikTok needs from one order.

    The default reads plainly named attributes (``total``, ``currency``, ``items``, ``email``...).
    A shop whose orders look different subclasses it, overrides the methods that do not fit and
    names the subclass in ``TIKTOK_TRACKING["ORDER_ADAPTER"]``. Every method validates what it
    returns, and the caller validates again, so bad data fails with an error naming the field.
    """

    def __init__(self, order):
        self.order = order

    def order_id(self) -> str:
        """The order's identifier as a string."""
        return clean_order_id(_first_present(self.order, ("order_id", "number", "pk")))

    def value(self) -> Decimal:
        """The order total."""
        total = _first_present(self.order, ("total", "value", "amount"))
        if total is None:
            raise InvalidOrderData("value", "the order has no total, value or amount")
        return clean_value(total)

    def currency(self) -> str:
        """The ISO 4217 code of the order's currency."""
        currency = _first_present(self.order, ("currency",))
        if currency is None:
            raise InvalidOrderData("currency", "the order has no currency")
        return clean_currency(currency)

    def contents(self) -> list[dict]:
        """The order lines as ``{content_id, content_name, quantity, price}`` dicts."""
        lines = _first_present(self.order, ("items", "lines"))
        if lines is None:
            return []
        # Django related managers are not iterable themselves; a plain method returns the lines.
        if hasattr(lines, "all"):
            lines = lines.all()
        elif callable(lines):
            lines = lines()
        if isinstance(lines, (str, bytes, Mapping)) or not isinstance(lines, Iterable):
            raise InvalidOrderData(
                "contents", f"the order's lines must be a list, not {type(lines).__name__}"
            )
        return clean_contents([self.line_content(line) for line in lines])

    def line_content(self, line) -> dict:
        """One order line as an unvalidated ``{content_id, content_name, quantity, price}`` dict."""
        product = getattr(line, "product", None)
        # A catalogue matches on the product's SKU, so the SKU wins over a database key.
        content_id = _first_present(line, ("sku", "content_id"))
        if content_id is None and product is not None:
            content_id = _first_present(product, ("sku",))
        if content_id is None:
            content_id = _first_present(line, ("product_id",))
        if content_id is None and product is not None:
            content_id = _first_present(product, ("pk",))
        content_name = _first_present(line, ("name", "title"))
        if content_name is None and product is not None:
            content_name = _first_present(product, ("name", "title"))
        return {
            "content_id": content_id,
            "content_name": None if content_name is None else str(content_name),
            "quantity": _first_present(line, ("quantity",)),
            # unit_price first: it cannot mean the line total, which "price" sometimes does.
            "price": _first_present(line, ("unit_price", "price")),
        }

    def email(self) -> str | None:
        """The customer's email as stored (it is normalised and hashed later), or None."""
        return _optional_string(_first_present(self.order, ("email",)))

    def phone(self) -> str | None:
        """The customer's phone number as stored (it is normalised and hashed later), or None."""
        return _optional_string(_first_present(self.order, ("phone", "phone_number")))

    def external_id(self) -> str | None:
        """The shop's identifier of the customer (it is hashed later), or None."""
        return _optional_string(_first_present(self.order, ("customer_id", "user_id")))

    def country(self) -> str | None:
        """The ISO 3166-1 alpha-2 code of the customer's country, or None."""
        country = _first_present(self.order, ("country", "country_code"))
        # django-countries stores a Country object whose code is the alpha-2 code.
        country = getattr(country, "code", country)
        return clean_country(country)

    def site_id(self) -> int | None:
        """The id (django.contrib.sites) of the site the order was placed on, or None.

        Read only when some pixel is limited to ``SITES``: it picks the pixels of a payment
        confirmed without a request (a webhook, a cron).
        """
        return clean_site_id(_first_present(self.order, ("site_id",)))


def clean_site_id(value) -> int | None:
    """``value`` (an integer, or its digits as a string) as a site id; None stays None."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOrderData("site_id", f"must be a site's integer id, got {value!r}")
    return value


def get_adapter_class(dotted_path: str) -> type[OrderAdapter]:
    """The OrderAdapter subclass at ``dotted_path``, or an error naming the setting."""
    setting = "TIKTOK_TRACKING['ORDER_ADAPTER']"
    if not isinstance(dotted_path, str) or not dotted_path.strip():
        raise TikTokTrackingImproperlyConfigured(
            f"{setting} must be a dotted path to an OrderAdapter subclass, got {dotted_path!r}."
        )
    try:
        adapter_class = import_string(dotted_path.strip())
    except ImportError as exc:
        raise TikTokTrackingImproperlyConfigured(
            f"{setting} = {dotted_path!r} could not be imported: {exc}"
        ) from exc
    if not (isinstance(adapter_class, type) and issubclass(adapter_class, OrderAdapter)):
        raise TikTokTrackingImproperlyConfigured(
            f"{setting} = {dotted_path!r} is not a subclass of "
            "tiktok_tracking.adapters.OrderAdapter."
        )
    return adapter_class


def configured_adapter_class() -> type[OrderAdapter]:
    """The OrderAdapter subclass named by ``ORDER_ADAPTER``, read at call time."""
    return get_adapter_class(conf.get("ORDER_ADAPTER"))


def adapter_for(order) -> OrderAdapter:
    """The configured order adapter reading ``order``."""
    return configured_adapter_class()(order)
