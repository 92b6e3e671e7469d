"""The readiness feed: tokens, the staff session, caching, the schema, constant queries."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import delivered_purchase_rows, outbox_rows
from tests.test_outbox import tracking
from tiktok_tracking import rollups
from tiktok_tracking.models import FeedToken, ReadinessReport, TrackedEvent
from tiktok_tracking.readiness import feed, store
from tiktok_tracking.tasks import assess_readiness

URL = "/tiktok/health/"
Status = TrackedEvent.Status

# The report's shape, as docs/readiness.md documents it (schema version 1).
TOP_KEYS = {"version", "generated_at", "window_days", "paid_orders_known", "thresholds", "markets"}
MARKET_KEYS = {"market", "verdict", "reasons", "windows", "countries"}
WINDOW_KEYS = {"verdict", "reasons", "figures"}
FIGURE_KEYS = {
    "paid_orders",
    "recorded_orders",
    "tracked_orders",
    "withheld_orders",
    "withheld_by_reason",
    "merged",
    "server_only",
    "browser_only",
    "unmergeable",
    "late_resends",
    "recent_answers",
    "recent_refusals",
    "oldest_undelivered_at",
    "latency_p50_seconds",
    "latency_p95_seconds",
    "match_quality",
    "last_receipt_at",
    "server_orders_since_last_receipt",
    "refunded_orders",
    "coverage",
    "net_coverage",
    "cpa_inflation",
    "double_count_share",
    "withheld_share",
    "refunded_share",
}
VERDICTS = {"ready", "caution", "not_ready", "insufficient_data"}


def consumer(name="rules", revoked=False):
    token, token_hash, hint = feed.new_token()
    FeedToken.objects.create(
        name=name,
        token_hash=token_hash,
        hint=hint,
        revoked_at=timezone.now() if revoked else None,
    )
    return token


def get(token=None, client=None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return (client or Client()).get(URL, params, headers=headers)


def delivered(count, prefix, country="US"):
    rows = outbox_rows(count, prefix=prefix, country=country)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Status.DELIVERED,
        delivered_at=timezone.now(),
        browser_seen_at=timezone.now() - timedelta(minutes=1),
        match_keys=rollups.key_mask("email", "ttclid", "ip", "user_agent"),
    )


def check_schema(document):
    assert set(document) == TOP_KEYS | {"stored"}
    assert document["version"] == 1
    for market in document["markets"]:
        assert set(market) == MARKET_KEYS
        assert market["verdict"] in VERDICTS and all(isinstance(r, str) for r in market["reasons"])
        assert set(market["windows"]) == {"1", "7", "30"}
        for window in market["windows"].values():
            assert set(window) == WINDOW_KEYS and window["verdict"] in VERDICTS
            assert set(window["figures"]) == FIGURE_KEYS


@pytest.fixture(autouse=True)
def recorded_purchases_only():
    with tracking(PAID_ORDERS=None):
        yield


@pytest.mark.django_db
def test_no_token_is_401_a_revoked_one_403_a_valid_one_200():
    response = get()
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert get("not-a-token").status_code == 401
    assert get(consumer("old", revoked=True)).status_code == 403
    response = get(consumer())
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    # A machine needs no session: the answer sets none.
    assert "sessionid" not in response.cookies


@pytest.mark.django_db
def test_staff_with_the_log_permission_read_it_in_their_session():
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert get(client=client).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_trackedevent"))
    client.force_login(User.objects.get(pk=staff.pk))
    assert get(client=client).status_code == 200


@pytest.mark.django_db
def test_only_the_hash_of_a_token_is_stored():
    token = consumer()
    stored = FeedToken.objects.get()
    assert token not in (stored.token_hash, stored.hint) and token.startswith(stored.hint)
    assert stored.token_hash == feed.hash_token(token)


@pytest.mark.django_db
def test_the_feed_serves_the_stored_report_and_follows_its_schema():
    delivered(25, "us")
    delivered(3, "ca", country="CA")
    assess_readiness()
    token = consumer()
    document = json.loads(get(token).content)
    check_schema(document)
    assert document["stored"] is True
    assert {m["market"]: m["verdict"] for m in document["markets"]} == {
        "US": "ready",
        "CA": "insufficient_data",
    }
    only_ca = json.loads(get(token, market="CA", window="30").content)
    assert [m["market"] for m in only_ca["markets"]] == ["CA"]
    assert only_ca["window_days"] == 30
    assert get(token, window="2").status_code == 400


@pytest.mark.django_db
def test_before_the_task_has_run_the_feed_computes_a_report_without_writing():
    delivered(25, "us")
    token = consumer()
    response = get(token)
    document = json.loads(response.content)
    check_schema(document)
    assert document["stored"] is False
    assert not ReadinessReport.objects.exists()


@pytest.mark.django_db
def test_the_feed_is_cacheable_by_etag_and_last_modified():
    delivered(25, "us")
    assess_readiness()
    token = consumer()
    first = get(token)
    assert set(first["Cache-Control"].split(", ")) == {"max-age=60", "private"}
    client = Client()
    again = client.get(
        URL, headers={"Authorization": f"Bearer {token}", "If-None-Match": first["ETag"]}
    )
    assert again.status_code == 304 and again["ETag"] == first["ETag"]
    since = client.get(
        URL,
        headers={
            "Authorization": f"Bearer {token}",
            "If-Modified-Since": first["Last-Modified"],
        },
    )
    assert since.status_code == 304
    # A new report with other figures is a new answer.
    delivered(2, "late", country="FR")
    store.assess(timezone.now() + timedelta(seconds=2))
    assert get(token)["ETag"] != first["ETag"]


@pytest.mark.django_db
def test_reports_older_than_two_days_are_dropped_when_a_new_one_is_stored():
    store.assess(timezone.now() - timedelta(days=3))
    store.assess()
    assert ReadinessReport.objects.count() == 1


@pytest.mark.django_db
def test_the_feed_takes_the_same_queries_for_10_rows_as_for_100000():
    token = consumer()

    def queries():
        assess_readiness()
        with CaptureQueriesContext(connection) as captured:
            assert get(token).status_code == 200
        return len(captured)

    delivered(10, "few")
    few = queries()
    delivered_purchase_rows([f"m{i}" for i in range(100_000)], countries=("US", "DE", "FR", "SE"))
    assert queries() == few


@pytest.mark.django_db
def test_the_task_is_scheduled():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="tiktok_tracking.assess_readiness")
    assert task.interval.every == 300


@pytest.mark.django_db
def test_a_token_is_created_and_shown_once_in_the_admin_and_revoked_there():
    import re

    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    response = admin.post(
        "/admin/tiktok_tracking/feedtoken/add/", {"name": "rule engine"}, follow=True
    )
    shown = re.search(r"<code>([A-Za-z0-9_-]{40,})</code>", response.content.decode())
    assert shown, "the new token is shown once"
    token = shown.group(1)
    stored = FeedToken.objects.get(name="rule engine")
    assert stored.token_hash == feed.hash_token(token)
    assert token not in admin.get("/admin/tiktok_tracking/feedtoken/").content.decode()
    assert get(token).status_code == 200

    admin.post(
        "/admin/tiktok_tracking/feedtoken/",
        {"action": "revoke", "_selected_action": [stored.pk]},
    )
    assert FeedToken.objects.get().revoked_at is not None
    assert get(token).status_code == 403


@pytest.mark.django_db
def test_the_dashboard_shows_the_market_table_of_the_stored_report():
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    dashboard = "/admin/tiktok_tracking/trackedevent/dashboard/"
    assert "No readiness report yet" in admin.get(dashboard).content.decode()
    delivered(25, "us")
    assess_readiness()
    html = admin.get(dashboard).content.decode()
    assert 'class="market-ready"' in html
    assert "coverage 100% (25 of 25 recorded purchases)" in html
