"""The settings door and the system checks."""

from contextlib import contextmanager

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from tiktok_tracking import checks, conf
from tiktok_tracking.exceptions import TikTokTrackingImproperlyConfigured


def tracking(**overrides):
    return override_settings(TIKTOK_TRACKING={**settings.TIKTOK_TRACKING, **overrides})


def ids(errors):
    return sorted(e.id for e in errors)


def test_defaults_apply_and_are_read_at_call_time():
    assert conf.get("PURCHASE_EVENT") == "Purchase"
    assert conf.get("BATCH_SIZE") == 1000
    assert conf.get("MAX_RETRY_HOURS") == 24
    assert conf.DEFAULTS["API_URL"] == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
    with tracking(BATCH_SIZE=7):
        assert conf.get("BATCH_SIZE") == 7


def test_missing_required_key_names_it():
    with tracking(ACCESS_TOKEN=""), pytest.raises(TikTokTrackingImproperlyConfigured) as info:
        conf.require("ACCESS_TOKEN")
    assert "ACCESS_TOKEN" in str(info.value)


def test_unknown_key_is_a_programming_error():
    with pytest.raises(KeyError):
        conf.get("PIXEL")


def test_valid_configuration_passes_checks():
    assert checks.check_settings() == []
    assert checks.check_broker() == []


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"PIXEL_ID": None}, "tiktok_tracking.E001"),
        ({"ACCESS_TOKEN": ""}, "tiktok_tracking.E002"),
        ({"PURCHASE_EVENT": "Bought"}, "tiktok_tracking.E003"),
        ({"ORDER_ADAPTER": "no.such.Adapter"}, "tiktok_tracking.E004"),
        ({"ORDER_ADAPTER": "tiktok_tracking.conf.get"}, "tiktok_tracking.E004"),
        ({"BATCH_SIZE": 5000}, "tiktok_tracking.E006"),
        ({"MAX_RETRY_HOURS": 48}, "tiktok_tracking.E007"),
        ({"TIMEOUT": -1}, "tiktok_tracking.E008"),
        ({"LEASE_SECONDS": 10, "TIMEOUT": 10}, "tiktok_tracking.E009"),
        ({"LEASE_SECONDS": 5, "TIMEOUT": 2.0}, "tiktok_tracking.E009"),
        ({"PIXELID": "x"}, "tiktok_tracking.W001"),
    ],
)
def test_misconfiguration_is_reported(overrides, expected):
    with tracking(**overrides):
        assert expected in ids(checks.check_settings())


def test_the_lease_is_compared_with_the_worst_case_of_the_pipeline():
    # Two batches in flight, each request ending within TIMEOUT, and a second to record.
    with tracking(LEASE_SECONDS=21.5, TIMEOUT=10.0):
        assert checks.check_settings() == []
    with tracking(LEASE_SECONDS=21, TIMEOUT=10.0):
        [error] = checks.check_settings()
    assert error.id == "tiktok_tracking.E009"
    assert "must exceed 21 s" in error.msg
    assert "2 batches in flight" in error.msg


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"UNKNOWN_COUNTRY_POLICY": "maybe"}, "tiktok_tracking.E010"),
        ({"CONSENT_OPT_IN_COUNTRIES": "DE"}, "tiktok_tracking.E011"),
        ({"CONSENT_LIMITED_DATA_USE_COUNTRIES": ("USA",)}, "tiktok_tracking.E011"),
        ({"COUNTRY_RESOLVER": "no.such.resolver"}, "tiktok_tracking.E012"),
        ({"TRUSTED_PROXIES": ("10.0.0.0/33",)}, "tiktok_tracking.E013"),
    ],
)
def test_consent_misconfiguration_is_reported(overrides, expected):
    with tracking(**overrides):
        assert expected in ids(checks.check_consent_settings())


def test_missing_middleware_is_a_warning(settings):
    assert checks.check_consent_settings() == []
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "tiktok" not in m]
    assert ids(checks.check_consent_settings()) == ["tiktok_tracking.W003"]


def test_legacy_purchase_name_is_accepted():
    with tracking(PURCHASE_EVENT="CompletePayment"):
        assert checks.check_settings() == []


def test_missing_broker_is_reported(monkeypatch):
    from tests.celery_app import app

    # Celery reads the environment variable before its own setting.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    # Celery 5.5 reads the setting under its Django name when broker_url is None (5.7 does not).
    names = ("broker_url", "CELERY_BROKER_URL")
    saved = {name: app.conf.get(name) for name in names}
    app.conf.update(dict.fromkeys(names))
    try:
        assert ids(checks.check_broker()) == ["tiktok_tracking.E005"]
    finally:
        app.conf.update(saved)
    assert checks.check_broker() == []


def test_no_celery_app_is_reported_even_with_a_broker_url_in_the_environment(monkeypatch):
    """The README promises E005 for a project without its Celery app; Celery's fallback app
    then takes CELERY_BROKER_URL from the environment, so a broker URL must not satisfy it."""
    import celery._state

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    # As in a project that never imports its Celery app: Celery creates its fallback app.
    monkeypatch.setattr(celery._state._tls, "current_app", None)
    monkeypatch.setattr(celery._state, "default_app", None)
    from celery import current_app

    assert current_app.conf.broker_url == "redis://127.0.0.1:6379/0"
    [error] = checks.check_broker()
    assert error.id == "tiktok_tracking.E005"
    assert "No Celery app of the project's is loaded" in error.msg
    assert "__init__.py" in error.hint


def test_an_adapter_error_has_a_hint():
    for path in ("no.such.Adapter", "tiktok_tracking.conf.get"):
        with tracking(ORDER_ADAPTER=path):
            [error] = [e for e in checks.check_settings() if e.id == "tiktok_tracking.E004"]
        assert "subclass of tiktok_tracking.adapters.OrderAdapter" in error.hint


def test_a_shop_path_that_resolves_to_the_base_adapter_is_a_warning():
    # tests.shop.adapters imports OrderAdapter: the README's old example named such a path.
    with tracking(ORDER_ADAPTER="tests.shop.adapters.OrderAdapter"):
        [warning] = checks.check_settings()
    assert warning.id == "tiktok_tracking.W004"
    assert "'tests.shop.adapters.OrderAdapter' is tiktok_tracking.adapters.OrderAdapter" in (
        warning.msg
    )
    assert warning.hint
    # The default adapter, named by its own path, and a real subclass are fine.
    with tracking(ORDER_ADAPTER="tiktok_tracking.adapters.OrderAdapter"):
        assert checks.check_settings() == []
    with tracking(ORDER_ADAPTER="tests.shop.adapters.ShopOrderAdapter"):
        assert checks.check_settings() == []


def test_templates_without_the_request_context_processor_are_a_warning(settings):
    assert checks.check_templates() == []
    [engine] = settings.TEMPLATES
    processors = engine["OPTIONS"]["context_processors"]
    without = [p for p in processors if p != checks.REQUEST_CONTEXT_PROCESSOR]
    assert len(without) == len(processors) - 1
    settings.TEMPLATES = [
        {**engine, "OPTIONS": {**engine["OPTIONS"], "context_processors": without}}
    ]
    [warning] = checks.check_templates()
    assert warning.id == "tiktok_tracking.W006"
    assert "render only an HTML comment" in warning.msg
    assert checks.REQUEST_CONTEXT_PROCESSOR in warning.hint
    # One Django engine with it is enough; other backends do not run the tags.
    settings.TEMPLATES = [
        {"BACKEND": "django.template.backends.jinja2.Jinja2", "OPTIONS": {}},
        {**engine, "OPTIONS": {**engine["OPTIONS"], "context_processors": without}},
        engine,
    ]
    assert checks.check_templates() == []


def test_the_template_check_is_registered(settings):
    from django.core import checks as django_checks

    settings.TEMPLATES = [{**settings.TEMPLATES[0], "OPTIONS": {"context_processors": []}}]
    found = [m.id for m in django_checks.run_checks() if m.id == "tiktok_tracking.W006"]
    assert found == ["tiktok_tracking.W006"]


# Django 6.1's check command runs the database checks too unless told which databases.
@pytest.mark.django_db
def test_manage_py_check_fails_on_errors_and_never_prints_the_token(capsys):
    with tracking(PIXEL_ID=None), pytest.raises(SystemCheckError) as info:
        call_command("check")
    assert "tiktok_tracking.E001" in str(info.value)
    assert settings.TIKTOK_TRACKING["ACCESS_TOKEN"] not in str(info.value)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.shop.reports.nothing_here", "could not be imported"),
        ("tests.shop.reports.Order.DoesNotExist.silenced_by_default", "could not be imported"),
        ("tests.shop.reports.__doc__", "is not callable"),
    ],
)
def test_paid_orders_must_name_a_callable(path, message):
    with tracking(PAID_ORDERS=path):
        [error] = [e for e in checks.check_settings() if e.id == "tiktok_tracking.E016"]
    assert message in error.msg
    with tracking(PAID_ORDERS="tests.shop.reports.paid_orders"):
        assert "tiktok_tracking.E016" not in ids(checks.check_settings())


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("InitiateCheckout", "must be a list of event names"),
        (("InitiateCheckout", "CheckoutStarted"), "'CheckoutStarted' is not a TikTok event name"),
        (("Purchase",), "'Purchase' is a purchase"),
        (("CompletePayment",), "'CompletePayment' is a purchase"),
    ],
)
def test_server_funnel_events_are_funnel_events(events, message):
    with tracking(SERVER_FUNNEL_EVENTS=events):
        [error] = [e for e in checks.check_settings() if e.id == "tiktok_tracking.E017"]
    assert message in error.msg
    with tracking(SERVER_FUNNEL_EVENTS=("InitiateCheckout", "AddPaymentInfo")):
        assert "tiktok_tracking.E017" not in ids(checks.check_settings())


@pytest.mark.parametrize(
    "url, transport, expected",
    [
        ("filesystem://", None, ["tiktok_tracking.W007"]),
        ("filesystem://", "tiktok_tracking.broker:FilesystemTransport", []),
        ("redis://127.0.0.1:6379/0", None, []),
    ],
)
def test_kombus_own_filesystem_transport_is_a_warning(url, transport, expected, monkeypatch):
    from tests.celery_app import app

    # Celery reads the environment variable before its own setting.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)

    # Each under both names: Celery reads the Django-style one first (see above).
    given = {
        "broker_url": url,
        "CELERY_BROKER_URL": url,
        "broker_transport": transport,
        "CELERY_BROKER_TRANSPORT": transport,
    }
    saved = {name: app.conf.get(name) for name in given}
    app.conf.update(given)
    try:
        found = checks.check_broker()
    finally:
        app.conf.update(saved)
    assert ids(found) == expected, [error.msg for error in found]
    for warning in found:
        assert "JSONDecodeError" in warning.msg
        assert "'tiktok_tracking.broker:FilesystemTransport'" in warning.hint


@contextmanager
def current_celery_app(app):
    """Make ``app`` Celery's current app for a block, as a project's own app is: the app the
    shared tasks resolve to, and so the one their wake-up is published through."""
    import celery._state

    previous = celery._state.get_current_app()
    app.set_current()
    try:
        yield app
    finally:
        previous.set_current()


@contextmanager
def eager(app, value=True):
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = value
    try:
        yield app
    finally:
        app.conf.task_always_eager = saved


def test_eager_celery_tasks_are_a_warning_that_the_payment_waits_for_tiktok():
    """With the app's tasks eager, the wake-up after a payment commits runs the delivery, and
    its request to TikTok, inside the payment request: W009 says so, whichever way the
    project made its Celery app eager."""
    from celery import Celery
    from django.core.checks import run_checks

    from tests.celery_app import app as project_app
    from tiktok_tracking.tasks import deliver_events

    # A shop's app configured from Django settings, as the README shows.
    defaults = {key: conf.DEFAULTS[key] for key in ("DRAIN_SECONDS", "TIMEOUT")}
    with override_settings(CELERY_TASK_ALWAYS_EAGER=True), tracking(**defaults):
        shop_app = Celery("shop", set_as_current=False)
        shop_app.config_from_object("django.conf:settings", namespace="CELERY")
        with current_celery_app(shop_app):
            assert deliver_events.app is shop_app
            [warning] = checks.check_eager_tasks()
            assert "tiktok_tracking.W009" in ids(run_checks())
    assert deliver_events.app is project_app
    assert warning.id == "tiktok_tracking.W009"
    assert isinstance(warning, checks.checks.Warning)
    assert "40 s" in warning.msg  # DRAIN_SECONDS + TIMEOUT, the defaults
    assert "CELERY_TASK_ALWAYS_EAGER = False" in warning.hint

    # The project's own app, switched on its conf.
    with eager(project_app), tracking(DRAIN_SECONDS=5, TIMEOUT=2.5):
        [warning] = checks.check_eager_tasks()
    assert "7.5 s" in warning.msg


def test_only_the_celery_app_the_tasks_are_bound_to_decides_the_eager_warning():
    """An eager app the tasks are not published through (another project's, a script's) makes
    no payment wait: no W009. The worker-run app of the test project is not eager: no W009."""
    from celery import Celery
    from django.core.checks import run_checks

    from tests.celery_app import app as project_app
    from tiktok_tracking.tasks import deliver_events

    assert deliver_events.app is project_app
    assert not project_app.conf.task_always_eager
    assert checks.check_eager_tasks() == []
    assert "tiktok_tracking.W009" not in ids(run_checks())

    with eager(Celery("script", set_as_current=False)):
        assert checks.check_eager_tasks() == []
    # The same app made the tasks' app: now it is the one that decides.
    with eager(Celery("script", set_as_current=False)) as script_app:
        with current_celery_app(script_app):
            assert ids(checks.check_eager_tasks()) == ["tiktok_tracking.W009"]
        with current_celery_app(script_app), eager(script_app, False):
            assert checks.check_eager_tasks() == []


REPLICA = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
ROUTER = "tiktok_tracking.replica.ReplicaRouter"


@pytest.mark.parametrize(
    ("replica", "routers", "wait", "problem"),
    [
        ("replica", [ROUTER], 0.5, None),
        (None, [], 0.5, None),
        ("reporting", [ROUTER], 0.5, "is not an alias of DATABASES other than 'default'"),
        ("default", [ROUTER], 0.5, "is not an alias of DATABASES other than 'default'"),
        ("replica", [], 0.5, "DATABASE_ROUTERS lacks 'tiktok_tracking.replica.ReplicaRouter'"),
        ("replica", [ROUTER], -1, "REPLICA_MAX_WAIT'] = -1 is not a number"),
        (None, [], "soon", "REPLICA_MAX_WAIT'] = 'soon' is not a number"),
    ],
)
def test_the_replica_settings_are_checked(replica, routers, wait, problem, monkeypatch):
    # The check reads the aliases only: no connection is made to the added one.
    monkeypatch.setitem(settings.DATABASES, "replica", REPLICA)
    with (
        override_settings(DATABASE_ROUTERS=routers),
        tracking(REPLICA_DATABASE=replica, REPLICA_MAX_WAIT=wait),
    ):
        found = [e for e in checks.check_settings() if e.id == "tiktok_tracking.E021"]
    if problem is None:
        assert found == []
    else:
        [error] = found
        assert problem in error.msg


def test_a_postgresql_outbox_without_keepalives_or_a_tcp_user_timeout_is_a_warning():
    """Without them a worker cut from PostgreSQL mid-statement waits on the kernel's defaults,
    minutes beyond the lease of its rows: W010 names what is missing and what to set."""
    with tracking(LEASE_SECONDS=120):
        [warning] = checks.database_partition_warnings("default", "postgresql", {})
    assert warning.id == "tiktok_tracking.W010"
    assert isinstance(warning, checks.checks.Warning)
    assert "lacks keepalives_idle, tcp_user_timeout" in warning.msg
    assert "120 s lease (LEASE_SECONDS)" in warning.msg
    assert '"tcp_user_timeout": 20000' in warning.hint
    # Keepalives named but switched off, and only one of the two.
    [warning] = checks.database_partition_warnings(
        "default", "postgresql", {"keepalives": 0, "keepalives_idle": 10}
    )
    assert "lacks keepalives (set to 0), tcp_user_timeout" in warning.msg


def test_a_postgresql_outbox_with_the_partition_options_has_no_warning(monkeypatch):
    from django.core.checks import run_checks
    from django.db import connections

    assert (
        checks.database_partition_warnings("default", "postgresql", checks.PARTITION_OPTIONS) == []
    )
    # Set in a service file the check cannot read; and SQLite, which has no link to lose.
    assert checks.database_partition_warnings("default", "postgresql", {"service": "shop"}) == []
    assert checks.database_partition_warnings("default", "sqlite", {}) == []

    # The check reads the outbox's database as configured (the test settings set the options
    # on PostgreSQL): silent as it is, W010 once they are taken out.
    database = connections["default"]
    assert "tiktok_tracking.W010" not in ids(run_checks())
    monkeypatch.setattr(database, "vendor", "postgresql")
    monkeypatch.setitem(database.settings_dict, "OPTIONS", {"sslmode": "prefer"})
    assert ids(checks.check_database_partitions()) == ["tiktok_tracking.W010"]
    monkeypatch.setitem(database.settings_dict, "OPTIONS", dict(checks.PARTITION_OPTIONS))
    assert checks.check_database_partitions() == []
