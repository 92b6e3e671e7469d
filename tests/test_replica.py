"""The app's reports on a real streaming replica: reads there, writes on the primary, lag told.

Needs a PostgreSQL hot standby of the test cluster (TIKTOK_TEST_REPLICA_URL; .ci/run's second
pass makes one with ``pg_basebackup``). The replica's replay is paused and resumed to hold it
behind the primary on purpose.
"""

import json
from contextlib import contextmanager
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.conftest import skip_unless_required, wait_until
from tests.factories import delivered_purchases
from tests.test_outbox import tracking
from tiktok_tracking import replica
from tiktok_tracking.models import ReadinessReport
from tiktok_tracking.readiness import feed, store

# Without a replica alias, the tests ask for the default database only, and skip (or fail, where
# CI requires the services) in on_the_replica, saying why.
HAS_REPLICA = "replica" in settings.DATABASES
pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(
        transaction=True, databases=["default", "replica"] if HAS_REPLICA else ["default"]
    ),
]

DASHBOARD = "/admin/tiktok_tracking/trackedevent/dashboard/"
EVENTS = "/admin/tiktok_tracking/trackedevent/"
FEED = "/tiktok/health/"
NOT_CAUGHT_UP = "which had not caught up with the primary"
CAUGHT_UP = "which had caught up with the primary"


@pytest.fixture(autouse=True)
def on_the_replica():
    """The app's reports read from the replica for the test; its replay runs again after."""
    if not HAS_REPLICA:
        skip_unless_required(
            "needs a streaming replica of the PostgreSQL cluster (TIKTOK_TEST_REPLICA_URL=postgres"
            "://...:5433/test; .ci/run's second pass makes one)"
        )
    with tracking(REPLICA_DATABASE="replica"):
        yield
    resume_replay()
    connections["replica"].close()


def on_replica(sql):
    with connections["replica"].cursor() as cursor:
        cursor.execute(sql)


def resume_replay():
    on_replica("SELECT pg_wal_replay_resume()")


def caught_up():
    return replica.catch_up("replica", max_wait=10).caught_up


@contextmanager
def replay_paused():
    """The replica replays nothing of what the primary writes in the block."""
    wait_until(caught_up, timeout=30, message="the replica to catch up")
    on_replica("SELECT pg_wal_replay_pause()")
    wait_until(
        lambda: on_replica_value("SELECT pg_get_wal_replay_pause_state()") == "paused",
        timeout=30,
        message="the replica's replay to pause",
    )
    try:
        yield
    finally:
        resume_replay()


def on_replica_value(sql):
    with connections["replica"].cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def staff_client():
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def tables_read(captured):
    """The app's and the shop's tables each captured statement read."""
    return [
        query["sql"]
        for query in captured.captured_queries
        if "tiktok_tracking_" in query["sql"] or "shop_order" in query["sql"]
    ]


def reconcile_json():
    out = StringIO()
    call_command("tiktok_reconcile", "--format", "json", stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def test_each_report_reads_the_replica_and_writes_the_primary():
    delivered_purchases("US", "seen-", 5, seen=True)
    client = staff_client()
    wait_until(caught_up, timeout=30, message="the replica to catch up")

    for url in (DASHBOARD, EVENTS):
        with (
            CaptureQueriesContext(connections["default"]) as primary,
            CaptureQueriesContext(connections["replica"]) as standby,
        ):
            page = client.get(url)
        assert page.status_code == 200
        assert CAUGHT_UP in page.content.decode()
        assert tables_read(standby), f"{url} read nothing from the replica"
        assert not tables_read(primary), f"{url} read the primary: {tables_read(primary)}"

    # The readiness run reads its figures there and stores its report on the primary.
    with CaptureQueriesContext(connections["replica"]) as standby:
        stored = store.assess()
    assert tables_read(standby)
    assert ReadinessReport.objects.using("default").filter(pk=stored.pk).exists()
    assert stored.document["read_from"]["caught_up"] is True
    assert stored.document["read_from"]["database"] == "replica"

    assert reconcile_json()["read_from"] == {
        "database": "replica",
        "replica": True,
        "caught_up": True,
        "replayed_until": reconcile_json()["read_from"]["replayed_until"],
        "behind_bytes": 0,
    }


def test_figures_read_before_the_replica_caught_up_are_labelled_until_it_has(monkeypatch):
    # The batch jobs would wait 10 s for the replica; a second says the same here.
    monkeypatch.setattr(replica, "BATCH_MAX_WAIT", 1.0)
    delivered_purchases("US", "before-", 5, seen=True)
    client = staff_client()
    token, token_hash, hint = feed.new_token()
    from tiktok_tracking.models import FeedToken

    FeedToken.objects.create(name="rules", token_hash=token_hash, hint=hint)
    store.assess()  # a report of the 5 purchases, which the replica gets

    with replay_paused():
        # Three more purchases, paid and delivered on the primary, which the replica lacks.
        delivered_purchases("US", "after-", 3, seen=True)
        dashboard = client.get(DASHBOARD)
        events = client.get(EVENTS)
        stale = store.assess()
        served = json.loads(
            Client().get(FEED, headers={"Authorization": f"Bearer {token}"}).content
        )
        reconciled = reconcile_json()

    # The page counts what the replica had, and says it had not caught up.
    assert dashboard.context["summary"]["recorded"] == 5
    assert NOT_CAUGHT_UP in dashboard.content.decode()
    assert "5 tracked events" in events.content.decode()
    assert NOT_CAUGHT_UP in events.content.decode()
    # The readiness report judged 5 orders, and says so.
    read_from = stale.document["read_from"]
    assert (read_from["caught_up"], read_from["behind_bytes"] > 0) == (False, True)
    assert read_from["replayed_until"] is not None
    # The feed served the report the replica had (the first), and says it was behind.
    assert served["served_from"]["caught_up"] is False
    assert served["stored"] is True and "read_from" in served
    assert reconciled["read_from"]["caught_up"] is False
    [us] = [line for line in reconciled["countries"] if line["country"] == "US"]
    assert us["recorded"] == 5

    # Replay resumed: the labels go and the figures count all 8 purchases.
    wait_until(caught_up, timeout=30, message="the replica to catch up")
    dashboard = client.get(DASHBOARD)
    assert dashboard.context["summary"]["recorded"] == 8
    assert CAUGHT_UP in dashboard.content.decode()
    assert NOT_CAUGHT_UP not in dashboard.content.decode()
    fresh = store.assess()
    assert fresh.document["read_from"]["caught_up"] is True
    [us] = [line for line in reconcile_json()["countries"] if line["country"] == "US"]
    assert us["recorded"] == 8


def test_without_a_replica_nothing_is_labelled():
    with tracking(REPLICA_DATABASE=None):
        delivered_purchases("US", "plain-", 2, seen=True)
        page = staff_client().get(DASHBOARD)
        stored = store.assess()
        assert "read_from" not in stored.document
        assert reconcile_json()["read_from"]["replica"] is False
    assert 'id="read-from"' not in page.content.decode()
