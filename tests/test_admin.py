"""The admin: delivery log, verdicts, masked payloads, permissioned actions, per-order panel."""

import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.shop.models import Order
from tiktok_tracking.admin import claim_text, duration, lease_text, masked_payload
from tiktok_tracking.archive import archive_finished
from tiktok_tracking.delivery import log_attempts
from tiktok_tracking.models import TrackedEvent

Status = TrackedEvent.Status
LIST_URL = "/admin/tiktok_tracking/trackedevent/"
EMAIL_HASH = "a" * 64


def make_rows(n, status=Status.DELIVERED, **fields):
    now = timezone.now()
    rows = TrackedEvent.objects.bulk_create(
        [
            TrackedEvent(
                pixel_id="CTESTPIXEL0001",
                event="Purchase",
                event_id=f"order_{fields.get('prefix', '')}{i}",
                order_id=f"{fields.get('prefix', '')}{i}",
                status=status,
                payload={
                    "event": "Purchase",
                    "event_id": f"order_{i}",
                    "user": {"email": EMAIL_HASH, "ip": "203.0.113.77", "user_agent": "UA/77"},
                },
                event_time=fields.get("event_time", now),
                country=["US", "DE", "FR"][i % 3],
                consent_status="granted",
                last_code=0 if status == Status.DELIVERED else 40002,
                last_message="OK" if status == Status.DELIVERED else "data.0.x: bad",
                last_request_id=f"req-{i}",
                browser_seen_at=now if i % 2 else None,
            )
            for i in range(n)
        ]
    )
    return rows


def staff(username, *perms):
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_(db):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_masked_payload_hides_personal_data():
    shown = masked_payload(
        {"user": {"email": EMAIL_HASH, "phone": [EMAIL_HASH], "ip": "1.2.3.4", "user_agent": "UA"}}
    )
    assert shown["user"] == {
        "email": "aaaaaaaa…",
        "phone": ["aaaaaaaa…"],
        "ip": "(hidden)",
        "user_agent": "(hidden)",
    }
    assert masked_payload({"user": {}}, purged=True)["user"]["ip"] == "(purged)"


@pytest.mark.django_db
def test_list_shows_status_verdict_and_answer(admin_client_):
    make_rows(2)
    html = admin_client_.get(LIST_URL).content.decode()
    assert "Both lanes, same id: will merge" in html
    assert "Server only" in html
    assert "req-1" in html
    assert "203.0.113.77" not in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "status=failed",
        "verdict=merged",
        "verdict=browser_only",
        "browser=seen",
        "event=Purchase",
        "consent_status=granted",
        "country=DE",
        "last_code=40002",
        "created_at__gte=2020-01-01+00:00:00%2B00:00",
        "q=req-1",
        "q=order_1",
    ],
)
def test_every_filter_and_search_works(admin_client_, query):
    make_rows(4)
    make_rows(2, status=Status.FAILED, prefix="f")
    response = admin_client_.get(f"{LIST_URL}?{query}")
    assert response.status_code == 200


@pytest.mark.django_db
def test_list_query_count_does_not_grow_with_rows(admin_client_):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert admin_client_.get(f"{LIST_URL}?status=delivered").status_code == 200
        return len(captured)

    make_rows(3, prefix="a")
    few = queries()
    make_rows(120, prefix="b")
    assert queries() == few


@pytest.mark.django_db
def test_detail_page_masks_payload_and_shows_attempts(admin_client_):
    row = make_rows(1)[0]
    log_attempts([row.pk], outcome="transient", batch_size=1, http_status=503, message="busy")
    html = admin_client_.get(f"{LIST_URL}{row.pk}/change/").content.decode()
    assert "aaaaaaaa…" in html and EMAIL_HASH not in html
    assert "203.0.113.77" not in html and "UA/77" not in html
    assert "busy" in html and "503" in html
    assert "test-access-token" not in html


@pytest.mark.django_db
def test_view_only_staff_can_look_but_not_send():
    rows = make_rows(1, status=Status.FAILED)
    client = staff("viewer", "view_trackedevent")
    response = client.get(LIST_URL)
    assert response.status_code == 200
    assert "resend" not in response.content.decode()
    client.post(LIST_URL, {"action": "resend", "_selected_action": [rows[0].pk]})
    assert TrackedEvent.objects.get().status == Status.FAILED
    assert client.get(f"{LIST_URL}{rows[0].pk}/change/").status_code == 200


@pytest.mark.django_db
def test_staff_without_view_permission_is_refused():
    make_rows(1)
    client = staff("nobody")
    assert client.get(LIST_URL).status_code == 403
    assert client.get(f"{LIST_URL}dashboard/").status_code == 403


@pytest.mark.django_db
def test_resend_requeues_with_the_same_event_id_and_refuses_old_rows(
    django_capture_on_commit_callbacks,
):
    fresh = make_rows(1, status=Status.FAILED, prefix="new")[0]
    old = make_rows(
        1, status=Status.FAILED, prefix="old", event_time=timezone.now() - timedelta(hours=49)
    )[0]
    client = staff("sender", "view_trackedevent", "send_trackedevent")
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            LIST_URL, {"action": "resend", "_selected_action": [fresh.pk, old.pk]}, follow=True
        )
    html = response.content.decode()
    assert "1 event queued to be sent again" in html
    assert "older than 48 h" in html
    fresh.refresh_from_db()
    old.refresh_from_db()
    assert (fresh.status, fresh.event_id) == (Status.PENDING, "order_new0")
    assert old.status == Status.FAILED
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_send_with_test_code_needs_the_setting(settings):
    row = make_rows(1, status=Status.FAILED)[0]
    client = staff("sender", "view_trackedevent", "send_trackedevent")
    data = {"action": "resend_with_test_code", "_selected_action": [row.pk]}
    html = client.post(LIST_URL, data, follow=True).content.decode()
    assert "TEST_EVENT_CODE" in html
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "TEST_EVENT_CODE": "TEST42"}
    client.post(LIST_URL, data)
    row.refresh_from_db()
    assert (row.status, row.test_event_code) == (Status.PENDING, "TEST42")


@pytest.mark.django_db
def test_send_with_test_code_uses_each_pixel_s_own_code(settings):
    first, second, third = make_rows(3, status=Status.FAILED)
    TrackedEvent.objects.filter(pk=second.pk).update(pixel_id="CPIXELTWO")
    TrackedEvent.objects.filter(pk=third.pk).update(pixel_id="CPIXELTHREE")
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "PIXEL_ID": None,
        "ACCESS_TOKEN": None,
        "PIXELS": [
            {"PIXEL_ID": "CTESTPIXEL0001", "ACCESS_TOKEN": "t1", "TEST_EVENT_CODE": "TEST_ONE"},
            {"PIXEL_ID": "CPIXELTWO", "ACCESS_TOKEN": "t2", "TEST_EVENT_CODE": "TEST_TWO"},
            {"PIXEL_ID": "CPIXELTHREE", "ACCESS_TOKEN": "t3"},
        ],
    }
    client = staff("sender", "view_trackedevent", "send_trackedevent")
    data = {"action": "resend_with_test_code", "_selected_action": [first.pk, second.pk, third.pk]}
    html = client.post(LIST_URL, data, follow=True).content.decode()
    assert "Not sent: the events of pixel CPIXELTHREE" in html
    rows = {row.pixel_id: row for row in TrackedEvent.objects.all()}
    assert (rows["CTESTPIXEL0001"].status, rows["CTESTPIXEL0001"].test_event_code) == (
        Status.PENDING,
        "TEST_ONE",
    )
    assert (rows["CPIXELTWO"].status, rows["CPIXELTWO"].test_event_code) == (
        Status.PENDING,
        "TEST_TWO",
    )
    assert rows["CPIXELTHREE"].status == Status.FAILED


@pytest.mark.django_db
def test_mark_suppressed_records_who(admin_client_):
    row = make_rows(1, status=Status.FAILED)[0]
    admin_client_.post(LIST_URL, {"action": "mark_suppressed", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == Status.SUPPRESSED
    assert "root" in row.suppressed_reason


@pytest.mark.django_db
def test_order_admin_panel_shows_the_order_s_events(admin_client_):
    order = Order.objects.create(number="77", total=Decimal("5.00"))
    make_rows(1)
    TrackedEvent.objects.update(order_id="77", event_id="order_77")
    html = admin_client_.get(f"/admin/shop/order/{order.pk}/change/").content.decode()
    assert "TikTok tracking" in html
    assert "order_77" in html and "Server only" in html


@pytest.mark.django_db
def test_detail_query_count_does_not_grow_with_attempts(admin_client_):
    row = make_rows(1, status=Status.FAILED)[0]

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert admin_client_.get(f"{LIST_URL}{row.pk}/change/").status_code == 200
        return len(captured)

    log_attempts([row.pk], outcome="transient", batch_size=1)
    few = queries()
    for _ in range(40):
        log_attempts([row.pk], outcome="transient", batch_size=1)
    assert queries() == few


@pytest.mark.django_db
def test_order_panel_query_count_does_not_grow_with_events(admin_client_):
    order = Order.objects.create(number="88", total=Decimal("5.00"))

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert admin_client_.get(f"/admin/shop/order/{order.pk}/change/").status_code == 200
        return len(captured)

    make_rows(1, prefix="x")
    TrackedEvent.objects.update(order_id="88")
    few = queries()
    make_rows(20, prefix="y")
    TrackedEvent.objects.update(order_id="88")
    assert queries() == few


@pytest.mark.django_db
def test_the_delivery_log_links_to_the_dashboard(admin_client_):
    html = admin_client_.get(LIST_URL).content.decode()
    assert 'href="/admin/tiktok_tracking/trackedevent/dashboard/"' in html
    assert admin_client_.get("/admin/tiktok_tracking/trackedevent/dashboard/").status_code == 200


# A row being sent: who holds it, since when, and when it goes back to the queue.


def test_lease_text_says_when_the_row_returns_or_that_the_sweeper_takes_it():
    now = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    held = TrackedEvent(
        status=Status.SENDING,
        claimed_by="web-1:4242",
        claimed_at=now - timedelta(seconds=20),
        lease_expires_at=now + timedelta(seconds=100),
    )
    with timezone.override("UTC"):
        assert claim_text(held, now) == (
            "claimed by web-1:4242 since 11:59:40; returns to the queue at 12:01:40, in 1 min 40 s"
        )
        assert lease_text(held, now + timedelta(seconds=130)) == (
            "lease expired at 12:01:40, the sweeper takes it back on its next run"
        )
    # In the admin's time zone, as Django shows times.
    with timezone.override("Asia/Kolkata"):
        assert lease_text(held, now).startswith("returns to the queue at 17:31:40,")


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0, 45, 100, 3600, 7500)] == [
        "0 s",
        "45 s",
        "1 min 40 s",
        "1 h 0 min",
        "2 h 5 min",
    ]


def sending_rows(n, prefix="s", lease_seconds=100):
    rows = make_rows(n, status=Status.SENDING, prefix=prefix)
    now = timezone.now()
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        claimed_by="web-1:4242",
        claimed_at=now - timedelta(seconds=20),
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        claim_token="t" * 32,
        last_code=None,
        last_message="",
    )
    return rows


RETURNS = re.compile(r"returns to the queue at \d\d:\d\d:\d\d, in 1 min (39|40) s")


@pytest.mark.django_db
def test_a_sending_row_shows_its_worker_and_when_it_returns_to_the_queue(admin_client_):
    row = sending_rows(1)[0]
    listed = admin_client_.get(LIST_URL).content.decode()
    page = admin_client_.get(f"{LIST_URL}{row.pk}/change/").content.decode()
    for html in (listed, page):
        assert "claimed by web-1:4242 since " in html
        assert RETURNS.search(html), html


@pytest.mark.django_db
def test_a_sending_row_past_its_lease_says_the_sweeper_takes_it_back(admin_client_):
    row = sending_rows(1, lease_seconds=-30)[0]
    for url in (LIST_URL, f"{LIST_URL}{row.pk}/change/"):
        html = admin_client_.get(url).content.decode()
        assert "lease expired at " in html
        assert "the sweeper takes it back on its next run" in html


@pytest.mark.django_db
def test_a_finished_row_keeps_its_last_claim_on_its_page(admin_client_):
    row = make_rows(1)[0]
    TrackedEvent.objects.filter(pk=row.pk).update(
        claimed_by="worker-7:99", claimed_at=timezone.now()
    )
    page = admin_client_.get(f"{LIST_URL}{row.pk}/change/").content.decode()
    assert "last claimed by worker-7:99 at " in page
    # The list speaks of claims only for rows being sent.
    assert "worker-7:99" not in admin_client_.get(LIST_URL).content.decode()


@pytest.mark.django_db
def test_sending_rows_cost_the_list_no_query_of_their_own(admin_client_):
    def queries(status):
        with CaptureQueriesContext(connection) as captured:
            assert admin_client_.get(f"{LIST_URL}?status={status}").status_code == 200
        return len(captured)

    make_rows(3, prefix="d")
    sending_rows(3, prefix="a")
    few = queries("sending")
    assert few == queries("delivered")
    sending_rows(60, prefix="b")
    assert queries("sending") == few


# The "last code" filter: "no code" means a request was made and no TikTok code came back.


def rows_without_a_code():
    """{name: row} of every way a row can be without a TikTok code, and one with a code."""
    made = {}
    for name, status, fields in (
        ("http_error", Status.PENDING, {"last_http_status": 503, "last_error": "HTTP 503"}),
        ("network", Status.FAILED, {"last_error": "Timed out after 10.0s"}),
        ("suppressed", Status.SUPPRESSED, {"suppressed_reason": "consent denied (DE)"}),
        ("never_attempted", Status.PENDING, {}),
        ("refused", Status.FAILED, {"last_code": 40002, "last_error": "code 40002, bad"}),
    ):
        row = make_rows(1, status=status, prefix=name)[0]
        values = {"last_code": None, "last_message": "", **fields}
        TrackedEvent.objects.filter(pk=row.pk).update(**values)
        made[name] = row
    return made


def listed_event_ids(html):
    return set(re.findall(r"<td class=\"field-event_id\">(order_[a-z_]+0)</td>", html))


@pytest.mark.django_db
@pytest.mark.parametrize("table", ["outbox", "archive"])
def test_no_code_lists_requests_answered_without_a_code_only(admin_client_, table):
    rows_without_a_code()
    url = LIST_URL
    if table == "archive":
        TrackedEvent.objects.update(status=Status.FAILED)
        TrackedEvent.objects.filter(event_id="order_suppressed0").update(status=Status.SUPPRESSED)
        TrackedEvent.objects.filter(event_id="order_never_attempted0").update(
            status=Status.SUPPRESSED
        )
        archive_finished(now=timezone.now() + timedelta(hours=1), retention_hours=0)
        assert TrackedEvent.objects.count() == 0
        url = "/admin/tiktok_tracking/archivedevent/"
    listed = admin_client_.get(url).content.decode()
    assert "no code (HTTP / network)" in listed
    html = admin_client_.get(f"{url}?last_code=").content.decode()
    assert listed_event_ids(html) == {"order_http_error0", "order_network0"}


@pytest.mark.django_db
def test_no_code_is_not_offered_for_rows_that_never_asked_tiktok(admin_client_):
    rows = rows_without_a_code()
    TrackedEvent.objects.filter(pk__in=[rows["http_error"].pk, rows["network"].pk]).delete()
    html = admin_client_.get(LIST_URL).content.decode()
    assert "no code (HTTP / network)" not in html
    assert "?last_code=40002" in html


# The event's page: a next attempt only where one can happen, every time to the second.


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (Status.PENDING, True),
        (Status.SENDING, False),
        (Status.DELIVERED, False),
        (Status.FAILED, False),
        (Status.SUPPRESSED, False),
    ],
)
def test_next_attempt_is_shown_only_while_the_row_waits_in_the_queue(admin_client_, status, shown):
    row = make_rows(1, status=status)[0]
    TrackedEvent.objects.filter(pk=row.pk).update(
        attempts=2, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    html = admin_client_.get(f"{LIST_URL}{row.pk}/change/").content.decode()
    assert ("Next attempt at" in html) is shown
    if shown:
        assert re.search(r", in (4 min 5\d s|5 min 0 s)", html), html


@pytest.mark.django_db
def test_times_are_shown_to_the_second_in_the_admin_s_time_zone(admin_client_, settings):
    settings.TIME_ZONE = "Asia/Kolkata"
    row = make_rows(1)[0]
    at = datetime(2026, 3, 4, 10, 11, 12, tzinfo=dt_timezone.utc)
    TrackedEvent.objects.filter(pk=row.pk).update(
        created_at=at,
        browser_seen_at=at + timedelta(seconds=5),
        delivered_at=at + timedelta(seconds=9),
    )
    log_attempts(
        [row.pk], attempted_at=at + timedelta(seconds=8), outcome="delivered", batch_size=1
    )
    listed = admin_client_.get(LIST_URL).content.decode()
    assert "15:41:12" in listed
    page = admin_client_.get(f"{LIST_URL}{row.pk}/change/").content.decode()
    # Created, the browser's receipt, the request and the delivery, each to its second.
    for clock in ("15:41:12", "15:41:17", "15:41:20", "15:41:21"):
        assert f"March 4, 2026 {clock}" in page, clock
