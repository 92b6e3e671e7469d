"""Fixtures of the oscar test shop: a catalogue, oscar's checkout driven over HTTP, payment rules.

The fixtures of ``tests/conftest.py`` (sandbox, workers) apply here too; ``celery_env`` is
narrowed so that worker processes load this shop's settings.
"""

from decimal import Decimal

import pytest
from django.apps import apps


def pytest_configure(config):
    # Oscar's own noise: haystack's simple backend does not index, and oscar's category
    # template tag still calls a treebeard method that treebeard has deprecated.
    for line in (
        "ignore:update is not implemented in this backend:UserWarning",
        "ignore:remove is not implemented in this backend:UserWarning",
        r"ignore:Using Category.get_tree\(\) is deprecated",
    ):
        config.addinivalue_line("filterwarnings", line)


def pytest_ignore_collect(collection_path, config):
    """Leave these tests out of any session not running on oscar's settings (the main one)."""
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        # None lets pytest decide as usual.
        return None if apps.is_installed("oscar") else True
    return None


@pytest.fixture
def celery_env(celery_env):
    return {**celery_env, "DJANGO_SETTINGS_MODULE": "tests.oscar_shop.settings"}


@pytest.fixture
def countries(db):
    from oscar.test.factories import CountryFactory

    return {
        code: CountryFactory(iso_3166_1_a2=code, printable_name=name, is_shipping_country=True)
        for code, name in (("US", "United States"), ("DE", "Germany"))
    }


@pytest.fixture
def make_product(db):
    """``make_product(title, price, upc=...)``: a product with stock, priced in USD."""
    from oscar.test.factories import create_product

    def make(title="Mug", price="12.50", upc=None, currency=None):
        product = create_product(title=title, upc=upc, price=Decimal(price), num_in_stock=50)
        if currency:
            product.stockrecords.update(price_currency=currency)
        return product

    return make


@pytest.fixture
def deferred_payment():
    """``deferred_payment(paid_statuses=..., paid_payment_event_types=...)``: switch the rule,
    restored after the test."""
    from tiktok_tracking.integrations import oscar as integration

    saved = integration.payment_rule()
    yield integration.connect
    integration.connect(
        paid_statuses=saved.paid_statuses,
        paid_payment_event_types=saved.paid_payment_event_types,
    )
