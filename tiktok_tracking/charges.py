"""Second charges on one order (post-purchase upsells, subscription renewals): a Purchase each."""

import datetime
from dataclasses import dataclass, replace

from tiktok_tracking.adapters import clean_contents, clean_currency, clean_value
from tiktok_tracking.exceptions import InvalidOrderData


@dataclass(frozen=True)
class Charge:
    """One more charge on an order that already had its Purchase.

    Its event keeps the order's id and customer but gets an event_id of its own,
    ``order_<id>_<suffix>``, and reports only what this charge bought: the order's own total
    was counted by its first Purchase and must not be counted again. ``currency`` None means
    the order's; ``contents`` are ``{content_id, content_name, quantity, price}`` dicts.
    """

    suffix: str
    value: object
    currency: str | None = None
    contents: tuple = ()
    # Charged with no browser involved (a renewal): the purchase tag refuses it.
    server_only: bool = False


def upsell(number, value, *, currency=None, contents=()):
    """The ``number``-th upsell accepted after the order (1, 2 ...): suffix ``upsell_<number>``."""
    return Charge(f"upsell_{_positive(number, 'upsell')}", value, currency, tuple(contents))


def renewal(period, value, *, currency=None, contents=()):
    """A subscription renewal: suffix ``renewal_<period>``, where ``period`` is the renewal's
    number (2 for the first renewal after the initial order, ...) or the date it covers.

    Renewals are charged by a webhook or a cron with no browser: the server lane sends them.
    """
    if isinstance(period, datetime.datetime):
        period = period.date()
    label = (
        period.isoformat() if isinstance(period, datetime.date) else _positive(period, "renewal")
    )
    return Charge(f"renewal_{label}", value, currency, tuple(contents), server_only=True)


def _positive(number, what):
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InvalidOrderData(f"{what} number", f"must be a positive integer, got {number!r}")
    return number


def apply_charge(facts, charge):
    """``facts`` (an order's OrderFacts) with the value, currency and contents of ``charge``."""
    if not isinstance(charge, Charge):
        raise InvalidOrderData("charge", f"must be a Charge, not {type(charge).__name__}")
    currency = facts.currency if charge.currency is None else charge.currency
    return replace(
        facts,
        value=clean_value(charge.value, field="charge.value"),
        currency=_charge_currency(currency),
        contents=tuple(_charge_contents(charge.contents)),
    )


def _charge_currency(currency):
    try:
        return clean_currency(currency)
    except InvalidOrderData as exc:
        raise InvalidOrderData("charge.currency", exc.reason) from None


def _charge_contents(contents):
    try:
        return clean_contents(contents)
    except InvalidOrderData as exc:
        raise InvalidOrderData(f"charge.{exc.field}", exc.reason) from None


def charge_suffix(charge, event_id_suffix):
    """The event_id suffix of a payment: the charge's, or the one given (not both, unless equal)."""
    if charge is None:
        return event_id_suffix
    if not isinstance(charge, Charge):
        raise InvalidOrderData("charge", f"must be a Charge, not {type(charge).__name__}")
    if event_id_suffix is not None and event_id_suffix != charge.suffix:
        raise InvalidOrderData(
            "event_id_suffix",
            f"{event_id_suffix!r} differs from the charge's suffix {charge.suffix!r}: give one",
        )
    return charge.suffix
