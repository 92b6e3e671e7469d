"""The tracking health dashboard: its numbers, splits, chart, checklist, permission and queries."""

import dataclasses
import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tiktok_tracking.config_log import record_config_if_changed
from tiktok_tracking.dashboard import (
    FAIL,
    PASS,
    RULES,
    WARN,
    HealthFacts,
    Ratio,
    daily_chart,
    daily_series,
    dashboard_context,
    dashboard_view,
    evaluate_checklist,
    failure_rows,
    period_days,
    top_groups,
)
from tiktok_tracking.dashboard import chart as layout
from tiktok_tracking.events import MATCH_KEYS
from tiktok_tracking.models import BrowserReceipt, ConfigChange, DailyRollup, TrackedEvent
from tiktok_tracking.readiness import store
from tiktok_tracking.rollups import rebuild_days, refresh_rollups

Status = TrackedEvent.Status
PIXEL = "CTESTPIXEL0001"
RAW_EMAIL = "jane.doe@example.com"
RAW_IP = "203.0.113.77"
RAW_UA = "Mozilla/5.0 (X11; Linux x86_64) SecretBrowser/9"
RAW_PHONE = "+14155550100"


def keys(*names):
    return sum(1 << MATCH_KEYS.index(name) for name in names)


def event(event_id, status=Status.DELIVERED, *, age=timedelta(0), **fields):
    """An unsaved row; ``age`` is how long ago it was created."""
    now = timezone.now()
    row = TrackedEvent(
        pixel_id=PIXEL,
        event=fields.pop("event", "Purchase"),
        event_id=event_id,
        order_id=event_id.removeprefix("order_"),
        status=status,
        payload={"user": {"email": RAW_EMAIL, "ip": RAW_IP, "user_agent": RAW_UA}},
        event_time=now - age,
        delivered_at=now - age if status == Status.DELIVERED else None,
        **fields,
    )
    row.age = age
    return row


def create(rows):
    """bulk_create, then backdate created_at (auto_now_add ignores the value given)."""
    TrackedEvent.objects.bulk_create(rows)
    now = timezone.now()
    by_age = {}
    for row in rows:
        by_age.setdefault(row.age, []).append(row.event_id)
    for age, event_ids in by_age.items():
        TrackedEvent.objects.filter(event_id__in=event_ids).update(created_at=now - age)


def receipt(event_id, name="Purchase", age=timedelta(0)):
    return BrowserReceipt(
        pixel_id=PIXEL, event=name, event_id=event_id, received_at=timezone.now() - age
    )


def model_admin():
    return admin.ModelAdmin(TrackedEvent, admin.site)


def superuser():
    return User.objects.create_superuser("boss", "boss@shop.test", "pw")


def get_page(user=None, days=None):
    """Call the view like the admin does and return the rendered response."""
    request = RequestFactory().get("/dashboard/", {"days": days} if days is not None else {})
    request.user = user or superuser()
    response = dashboard_view(request, model_admin=model_admin())
    response.render()
    return response


def by_label(rows):
    return {str(row["label"]): row for row in rows}


def statuses(response):
    return {item.key: item.status for item in response.context_data["checklist"]}


def chart_svg(days):
    """The daily chart as the dashboard draws it, from the view's numbers."""
    return render_to_string(
        "admin/tiktok_tracking/dashboard_chart.html", {"chart": daily_chart(days)}
    )


@pytest.fixture
def recorded_config():
    """The configuration as the sweeper records it (a page only reads it)."""
    return record_config_if_changed()


@pytest.fixture
def shop_week():
    """A week of purchases covering every status, countries, consent states, keys and codes."""
    seen = timezone.now()
    two_days = timedelta(days=2)
    rows = [
        # Merged: delivered and confirmed by the browser, rich match keys.
        *[
            event(
                f"order_m{i}",
                country="US",
                consent_status="granted",
                match_keys=keys("email", "ttp", "ip", "user_agent"),
                browser_seen_at=seen,
                last_code=0,
                last_message="OK",
            )
            for i in range(4)
        ],
        # Delivered, server only, phone only, two days ago.
        *[
            event(
                f"order_s{i}",
                country="DE",
                consent_status="granted",
                match_keys=keys("phone", "ttclid"),
                age=two_days,
                last_code=0,
            )
            for i in range(2)
        ],
        # Delivered with no match key at all, country unknown, never asked.
        event("order_bare", country="", consent_status=""),
        # Failed: a TikTok parameter error quoting a raw email, and a network error.
        event(
            "order_f1",
            Status.FAILED,
            country="FR",
            consent_status="granted",
            last_code=40002,
            last_message=f"data.0.user.email: {RAW_EMAIL} is not valid <script>",
        ),
        event(
            "order_f2",
            Status.FAILED,
            country="FR",
            consent_status="granted",
            last_error="HTTP 503",
            browser_seen_at=seen,
        ),
        # Suppressed by consent.
        *[
            event(
                f"order_x{i}",
                Status.SUPPRESSED,
                country="DE",
                consent_status="denied",
                suppressed_reason="consent denied",
            )
            for i in range(2)
        ],
        # Waiting: one stuck for two hours, one just claimed by a worker.
        event("order_p1", Status.PENDING, age=timedelta(hours=2), country="US"),
        event("order_p2", Status.SENDING, country="US"),
        # Not purchases, or not this week: left out of the purchase numbers.
        event("checkout_1", event="InitiateCheckout", country="US"),
        event("order_old", age=timedelta(days=10), country="US", browser_seen_at=seen),
    ]
    create(rows)
    BrowserReceipt.objects.bulk_create(
        [
            *[receipt(f"order_m{i}") for i in range(4)],
            receipt("order_f2"),
            # The pixel fired but the server never recorded the order.
            receipt("order_ghost"),
            receipt("checkout_1", name="InitiateCheckout"),
            receipt("order_old", age=timedelta(days=10)),
        ]
    )
    return rows


@pytest.mark.django_db
def test_purchase_numbers(shop_week):
    page = get_page()
    summary = page.context_data["summary"]
    assert summary["orders_paid"] == summary["recorded"] == 13
    assert summary["delivered"] == 7
    assert summary["failed"] == 2
    assert summary["suppressed"] == 2
    assert summary["in_flight"] == 2
    assert summary["stale_in_flight"] == 1
    assert summary["browser_seen"] == 5
    assert summary["browser_only"] == 1
    assert summary["browser_receipts"] == 6
    assert summary["merged"] == 4
    assert summary["delivery_rate"] == Ratio(7, 11)
    assert summary["dedup_rate"] == Ratio(4, 7)
    assert summary["suppression_rate"] == Ratio(2, 13)
    html = page.content.decode()
    assert "63.6%" in html  # delivery rate
    assert "57.1%" in html  # dedup rate
    assert "15.4%" in html  # suppression rate


@pytest.mark.django_db
def test_counts_by_country_and_consent(shop_week):
    page = get_page()
    countries = page.context_data["countries"]
    assert [row["value"] for row in countries] == ["US", "DE", "FR", ""]
    us = by_label(countries)["US"]
    assert (us["recorded"], us["delivered"], us["merged"], us["in_flight"]) == (6, 4, 4, 2)
    de = by_label(countries)["DE"]
    assert (de["recorded"], de["delivered"], de["suppressed"]) == (4, 2, 2)
    assert de["delivery_rate"] == Ratio(2, 2)
    assert by_label(countries)["unknown"]["recorded"] == 1
    consents = by_label(page.context_data["consents"])
    assert consents["granted"]["recorded"] == 8
    assert consents["denied"]["suppressed"] == 2
    assert consents["denied"]["delivery_rate"].percent is None
    assert consents["not asked"]["recorded"] == 3
    html = page.content.decode()
    assert "—" in html  # the denied group's delivery rate has nothing to divide by


@pytest.mark.django_db
def test_match_key_coverage(shop_week):
    page = get_page()
    assert page.context_data["match_delivered"] == 7
    coverage = {row["key"]: row["ratio"] for row in page.context_data["match_keys"]}
    assert coverage == {
        "email": Ratio(4, 7),
        "phone": Ratio(2, 7),
        "external_id": Ratio(0, 7),
        "ttclid": Ratio(2, 7),
        "ttp": Ratio(4, 7),
        "ip": Ratio(4, 7),
        "user_agent": Ratio(4, 7),
    }
    assert page.context_data["facts"].with_email_or_phone == 6


@pytest.mark.django_db
def test_failures_by_code_hide_personal_data(shop_week, settings):
    page = get_page()
    failures = by_label(page.context_data["failures"])
    assert failures["40002"]["count"] == 1
    assert "(email)" in failures["40002"]["example"]
    assert failures["no code (HTTP / network)"]["example"] == "HTTP 503"
    html = page.content.decode()
    for secret in (RAW_EMAIL, RAW_IP, RAW_UA, settings.TIKTOK_TRACKING["ACCESS_TOKEN"]):
        assert secret not in html
    assert "is not valid &lt;script&gt;" in html
    assert "is not valid <script>" not in html


@pytest.mark.django_db
def test_daily_chart_has_one_bar_group_per_day(shop_week):
    page = get_page()
    daily = page.context_data["daily"]
    assert len(daily) == 7
    today = timezone.localdate()
    assert daily[-1]["day"] == today
    assert daily[-3]["delivered"] == 2  # the server-only purchases, two days ago
    assert sum(day["delivered"] for day in daily) == 8  # InitiateCheckout counts too
    assert sum(day["failed"] for day in daily) == 2
    assert sum(day["suppressed"] for day in daily) == 2
    html = page.content.decode()
    assert html.count('class="chart-day"') == 7
    assert "<svg" in html and "<title>" in html


def test_chart_escapes_text_and_has_empty_states():
    hostile = '<script>alert("x")</script>'
    svg = chart_svg([{"day": hostile, "delivered": 3, "failed": 1, "suppressed": 0}])
    assert hostile not in svg
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in svg
    assert svg.count('class="chart-day"') == 1
    assert hasattr(svg, "__html__")
    empty = chart_svg([])
    assert "No days to show." in empty and "chart-day" not in empty
    first = timezone.localdate()
    quiet = chart_svg(daily_series([], first, 30))
    assert quiet.count('class="chart-day"') == 30
    assert "No server events in this period." in quiet


def test_chart_is_numbers_drawn_by_the_template():
    """The view hands the template numbers and texts, never markup."""
    first = timezone.localdate()
    chart = daily_chart(daily_series([{"day": first, "delivered": 7}], first, 30))

    def leaves(value):
        if isinstance(value, dict):
            return [leaf for item in value.values() for leaf in leaves(item)]
        if isinstance(value, list):
            return [leaf for item in value for leaf in leaves(item)]
        return [value]

    assert not any(hasattr(leaf, "__html__") or "<" in str(leaf) for leaf in leaves(chart))
    assert chart["ceiling"] == 10
    assert [tick["value"] for tick in chart["ticks"]] == [0, 5, 10]
    assert sum(1 for day in chart["days"] if day["label"]) == 10  # every third day of thirty
    svg = chart_svg(daily_series([{"day": first, "delivered": 7}], first, 30))
    assert ">10</text>" in svg and ">5</text>" in svg
    assert f"{first.isoformat()}: 7 delivered, 0 failed, 0 suppressed</title>" in svg


@pytest.mark.parametrize("language", ["en", "de"])
def test_chart_coordinates_are_never_localized(language):
    from django.utils import translation

    first = timezone.localdate()
    with translation.override(language):
        svg = chart_svg(daily_series([{"day": first, "delivered": 3, "failed": 1}], first, 7))
    shapes = svg.split("<svg", 1)[1].split(">", 1)[1]  # the svg's own width is "100%"
    numbers = re.findall(r' (?:x|y|width|height|x1|x2|y1|y2|stroke-opacity)="([^"]*)"', shapes)
    assert numbers and all(re.fullmatch(r"-?\d+(\.\d+)?", number) for number in numbers)


def test_a_single_day_is_drawn_as_one_day_s_bar_not_across_the_chart():
    today = timezone.localdate()
    week = daily_chart(daily_series([{"day": today, "delivered": 3}], today - timedelta(6), 7))
    (day,) = daily_chart(daily_series([{"day": today, "delivered": 3}], today, 1))["days"]
    # As wide as a week's bar, centred where the chart's middle is.
    assert day["bar_width"] == week["days"][0]["bar_width"] <= layout.MAX_BAR_WIDTH
    middle = (layout.LEFT + layout.WIDTH - layout.RIGHT) / 2
    assert day["x"] + day["bar_width"] / 2 == pytest.approx(middle, abs=0.1)
    svg = chart_svg(daily_series([{"day": today, "delivered": 3}], today, 1))
    bars = svg.split('class="chart-day"', 1)[1]
    assert re.findall(r'<rect x="[^"]+" y="[^"]+" width="([^"]+)"', bars) == [str(day["bar_width"])]


def test_chart_stacks_bars_in_proportion():
    first = timezone.localdate()
    rows = [{"day": first, "delivered": 6, "failed": 2, "suppressed": 2}]
    (day,) = daily_chart(daily_series(rows, first, 1))["days"]
    delivered, failed, suppressed = (segment["height"] for segment in day["segments"])
    assert delivered == pytest.approx(3 * failed, rel=0.02)
    assert failed == pytest.approx(suppressed, rel=0.02)
    svg = chart_svg(daily_series(rows, first, 1))
    bars = svg.split('class="chart-day"', 1)[1]  # after the legend's swatches
    heights = [
        float(h)
        for h in re.findall(r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)"', bars)
    ]
    assert len(heights) == 3
    assert heights[0] == pytest.approx(3 * heights[1], rel=0.02)
    assert heights[1] == pytest.approx(heights[2], rel=0.02)


@pytest.mark.django_db
def test_period_switch(shop_week):
    # Today: all but the two-day-old rows, and the two-hour-old one unless today began since.
    now = timezone.now()
    today = 11 if timezone.localdate(now - timedelta(hours=2)) == timezone.localdate(now) else 10
    assert get_page(days="1").context_data["summary"]["recorded"] == today
    user = User.objects.get(username="boss")
    assert get_page(user, days="7").context_data["summary"]["recorded"] == 13
    month = get_page(user, days="30")
    assert month.context_data["summary"]["recorded"] == 14
    assert month.content.decode().count('class="chart-day"') == 30
    assert get_page(user, days="365").context_data["days"] == 7
    assert get_page(user, days="x").context_data["days"] == 7
    assert 'aria-current="page"' in month.content.decode()


def test_period_days():
    assert [period_days(raw) for raw in ("1", "7", "30", None, "", "2", "-7", "7.0")] == [
        1,
        7,
        30,
        7,
        7,
        7,
        7,
        7,
    ]


@pytest.mark.django_db
def test_healthy_setup_passes_every_check(recorded_config):
    rows = [
        event(
            f"order_{i}",
            country="US",
            consent_status="granted",
            match_keys=keys("email", "ip", "user_agent"),
            browser_seen_at=timezone.now(),
        )
        for i in range(40)
    ]
    create(rows)
    BrowserReceipt.objects.bulk_create([receipt(row.event_id) for row in rows])
    store.assess()  # what the periodic task does: the markets are judged
    page = get_page()
    assert set(statuses(page).values()) == {PASS}, page.context_data["checklist"]
    config = next(i for i in page.context_data["checklist"] if i.key == "config_recorded")
    assert timezone.localdate().isoformat() in config.detail
    assert "1 change recorded" in config.detail
    html = page.content.decode()
    assert html.count(">PASS</span>") == 10


@pytest.mark.django_db
def test_unhealthy_setup_fails_the_right_checks(settings):
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "CONSENT_OPT_IN_COUNTRIES": ()}
    record_config_if_changed()  # as the sweeper does after a change
    rows = [
        event(f"order_{i}", country="US", match_keys=keys("ip", "user_agent")) for i in range(20)
    ]
    rows += [event(f"order_f{i}", Status.FAILED, last_code=40001) for i in range(3)]
    rows.append(event("order_stuck", Status.PENDING, age=timedelta(hours=3)))
    create(rows)
    # The pixel uses the old purchase name and random ids.
    BrowserReceipt.objects.bulk_create(
        [receipt(f"3f2a-{i}", name="CompletePayment") for i in range(20)]
    )
    page = get_page()
    assert statuses(page) == {
        "pixel_fires": PASS,
        "server_delivers": PASS,
        "ids_match": FAIL,
        "names_match": FAIL,
        "orders_reconcile": FAIL,
        "dedup_visible": FAIL,
        "match_quality": WARN,
        "consent_policy": WARN,
        "rule_scope": WARN,
        "config_recorded": PASS,
    }
    reconcile = next(i for i in page.context_data["checklist"] if i.key == "orders_reconcile")
    assert "1 purchase has waited over an hour" in reconcile.detail
    assert "3 purchases failed" in reconcile.detail
    html = page.content.decode()
    assert ">FAIL</span>" in html and ">WARN</span>" in html


@pytest.mark.django_db
def test_empty_shop_warns_instead_of_passing(recorded_config):
    page = get_page()
    assert statuses(page) == {
        "pixel_fires": WARN,
        "server_delivers": WARN,
        "ids_match": WARN,
        "names_match": WARN,
        "orders_reconcile": WARN,
        "dedup_visible": WARN,
        "match_quality": WARN,
        "consent_policy": PASS,
        "rule_scope": WARN,
        "config_recorded": PASS,
    }
    assert page.context_data["summary"]["delivery_rate"].percent is None
    assert "No failed event in this period." in page.content.decode()


def test_checklist_thresholds():
    base = HealthFacts(
        purchase_event="Purchase",
        receipts=100,
        receipt_names=frozenset({"Purchase"}),
        server_recorded=100,
        server_delivered=100,
        server_purchase_names=frozenset({"Purchase"}),
        purchase_receipts=100,
        purchase_receipts_matched=95,
        purchases_recorded=100,
        purchases_failed=1,
        purchases_delivered=99,
        merged=90,
        with_email_or_phone=50,
        consent_policy_version="1",
        opt_in_countries=("DE",),
        config_changes=2,
        config_latest=timezone.now(),
        readiness_judged=True,
    )

    def verdicts(**changes):
        facts = dataclasses.replace(base, **changes)
        return {item.key: item.status for item in evaluate_checklist(facts)}

    assert set(verdicts().values()) == {PASS}
    assert verdicts(purchase_receipts_matched=94)["ids_match"] == WARN
    assert verdicts(purchase_receipts_matched=79)["ids_match"] == FAIL
    assert verdicts(purchases_failed=2)["orders_reconcile"] == FAIL
    assert verdicts(with_email_or_phone=49)["match_quality"] == WARN
    assert verdicts(merged=0)["dedup_visible"] == FAIL
    assert verdicts(receipts=0)["pixel_fires"] == FAIL
    assert verdicts(server_delivered=0)["server_delivers"] == FAIL
    assert verdicts(receipt_names=frozenset({"Purchase", "Pay"}))["names_match"] == WARN
    assert verdicts(receipt_names=frozenset({"Purchase", "ViewContent"}))["names_match"] == PASS
    assert verdicts(server_purchase_names=frozenset({"CompletePayment"}))["names_match"] == WARN
    assert verdicts(receipt_names=frozenset({"InitiateCheckout"}))["names_match"] == WARN
    assert verdicts(consent_policy_version="")["consent_policy"] == WARN
    # A shop still on the old name passes when both lanes agree on it.
    old_name = verdicts(
        purchase_event="CompletePayment",
        receipt_names=frozenset({"CompletePayment"}),
        server_purchase_names=frozenset({"CompletePayment"}),
    )
    assert old_name["names_match"] == PASS


def test_top_countries_fold_the_rest_into_other():
    rows = [{"country": f"C{i:02d}", "recorded": 100 - i, "delivered": 1} for i in range(30)]
    shown = top_groups(rows, "country", str)
    assert len(shown) == 21
    assert shown[0]["value"] == "C00"
    assert shown[-1]["label"] == "other (10)"
    assert shown[-1]["recorded"] == sum(100 - i for i in range(20, 30))
    assert shown[-1]["delivered"] == 10


def test_redaction_and_failure_labels():
    def example(text, secrets=()):
        row = {"last_code": 40002, "count": 1, "example": text}
        return failure_rows([row], secrets)[0]["example"]

    text = f"bad {RAW_EMAIL} from {RAW_IP} {RAW_PHONE} token-123 ua {RAW_UA}"
    cleaned = example(text, secrets=["token-123"])
    for secret in (RAW_EMAIL, RAW_IP, RAW_PHONE, "token-123", "SecretBrowser"):
        assert secret not in cleaned
    assert len(example("x" * 1000)) == 160
    rows = failure_rows(
        [
            {"last_code": None, "count": 1, "example": "", "example_error": "timeout"},
            {"last_code": 40100, "count": 5, "example": "Too many requests"},
        ]
    )
    assert [row["label"] for row in rows] == ["40100", "no code (HTTP / network)"]
    assert rows[1]["example"] == "timeout"
    assert str(Ratio(1, 3)) == "33.3%" and str(Ratio(0, 0)) == "—"


@pytest.mark.django_db
def test_staff_without_view_permission_is_refused():
    user = User.objects.create_user("clerk", password="pw", is_staff=True)
    request = RequestFactory().get("/dashboard/")
    request.user = user
    with pytest.raises(PermissionDenied):
        dashboard_view(request, model_admin=model_admin())
    user.user_permissions.add(Permission.objects.get(codename="view_trackedevent"))
    user = User.objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance
    assert get_page(user).status_code == 200


@pytest.mark.django_db
def test_served_by_the_admin_with_breadcrumbs():
    client = Client()
    client.force_login(superuser())
    url = reverse("admin:tiktok_tracking_trackedevent_dashboard")
    response = client.get(url, {"days": "30"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="breadcrumbs"' in html
    assert reverse("admin:tiktok_tracking_trackedevent_changelist") in html
    assert html.count('class="chart-day"') == 30


COUNTRIES = [
    "US", "DE", "FR", "GB", "IT", "ES", "NL", "BE", "AT", "CH", "SE", "NO", "DK", "FI", "PL",
    "PT", "IE", "CZ", "HU", "RO", "GR", "CA", "MX", "BR", "AR", "JP", "KR", "AU", "NZ", "ZA",
]  # fmt: skip
CODES = [None, 40001, 40002, 40100]


def spread(n, prefix):
    """``n`` purchases across 30 countries, every status and a spread of days and codes."""
    statuses = [Status.DELIVERED, Status.FAILED, Status.SUPPRESSED, Status.PENDING, Status.SENDING]
    return [
        event(
            f"order_{prefix}{i}",
            statuses[i % 5],
            age=timedelta(days=i % 7),
            country=COUNTRIES[i % 30],
            consent_status=["granted", "denied", ""][i % 3],
            match_keys=i % 128,
            last_code=CODES[i // 5 % 4] if i % 5 == 1 else None,
            last_message=f"message {i}" if i % 5 == 1 else "",
            browser_seen_at=timezone.now() if i % 2 else None,
        )
        for i in range(n)
    ]


@pytest.mark.django_db
def test_query_count_does_not_grow_with_rows(django_assert_max_num_queries):
    user = superuser()
    create(spread(10, "a"))
    BrowserReceipt.objects.bulk_create([receipt(f"order_a{i}") for i in range(5)])
    # The sweeper records the configuration and beat rolls the closed days up; pages only read.
    record_config_if_changed()
    refresh_rollups()
    assert ConfigChange.objects.count() == 1

    with CaptureQueriesContext(connection) as small:
        get_page(user)
    create(spread(490, "b"))
    # Closed days are read from their rollups, which the periodic task refreshes: roll the
    # rows just backdated onto them up again, as it would.
    rebuild_days([timezone.localdate() - timedelta(days=n) for n in range(1, 7)])
    BrowserReceipt.objects.bulk_create([receipt(f"order_b{i}") for i in range(200)])
    with django_assert_max_num_queries(15), CaptureQueriesContext(connection) as large:
        page = get_page(user)
    assert len(large) == len(small)
    assert len(page.context_data["countries"]) == 21  # top 20 and "other"
    assert page.context_data["summary"]["recorded"] == 500


# --- GET never writes -------------------------------------------------------------------------

WRITE_STATEMENT = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|MERGE|TRUNCATE)\b", re.IGNORECASE)


def writes(queries):
    return [
        query["sql"] for query in queries.captured_queries if WRITE_STATEMENT.match(query["sql"])
    ]


def figures(context):
    """What the page shows, for comparing two ways of counting the same rows."""
    return {
        "summary": context["summary"],
        "countries": context["countries"],
        "consents": context["consents"],
        "match_keys": context["match_keys"],
        "failures": context["failures"],
        "daily": context["daily"],
        "checklist": [(item.key, item.status, item.detail) for item in context["checklist"]],
    }


@pytest.mark.django_db
@pytest.mark.parametrize("days", ["1", "7", "30"])
def test_a_get_of_the_dashboard_never_writes(days, settings):
    """No rollup built, no configuration recorded: beat and the sweeper do that, not a page."""
    create(spread(60, "w"))
    create([event("order_month", age=timedelta(days=20))])
    BrowserReceipt.objects.bulk_create([receipt(f"order_w{i}") for i in range(10)])
    client = Client()
    client.force_login(superuser())
    url = reverse("admin:tiktok_tracking_trackedevent_dashboard")

    # Nothing rolled up and nothing recorded: the two writes the page used to make itself.
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"days": days})
    assert response.status_code == 200
    assert writes(queries) == []
    assert not DailyRollup.objects.exists() and not ConfigChange.objects.exists()
    closed = int(days) - 1
    assert response.context["live_days"] == closed
    if closed:
        assert (
            f"{closed} closed days of this period are not rolled up yet"
            in response.content.decode()
        )

    # A configuration recorded, then changed: still only read.
    record_config_if_changed()
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "CONSENT_POLICY_VERSION": "v2"}
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"days": days})
    assert writes(queries) == []
    assert ConfigChange.objects.count() == 1
    item = next(i for i in response.context["checklist"] if i.key == "config_recorded")
    assert item.status == WARN
    assert "The settings changed after the last record" in item.detail


@pytest.mark.django_db
def test_unrolled_days_read_live_show_what_the_rollups_show(shop_week):
    create(spread(120, "r"))
    user = superuser()
    live = {days: get_page(user, days=days).context_data for days in ("1", "7", "30")}
    assert [live[days]["live_days"] for days in ("1", "7", "30")] == [0, 6, 29]
    assert not DailyRollup.objects.exists()

    refresh_rollups()
    rolled_up = {days: get_page(user, days=days).context_data for days in ("1", "7", "30")}
    for days in ("1", "7", "30"):
        assert rolled_up[days]["live_days"] == 0
        assert figures(live[days]) == figures(rolled_up[days])

    # Some days rolled up and some not (a gap in the middle, and yesterday): the same again.
    today = timezone.localdate()
    DailyRollup.objects.filter(day__in=[today - timedelta(days=n) for n in (1, 3, 4, 10)]).delete()
    mixed = get_page(user, days="30")
    assert mixed.context_data["live_days"] == 4
    assert figures(mixed.context_data) == figures(rolled_up["30"])
    assert "4 closed days of this period are not rolled up yet" in mixed.content.decode()


@pytest.mark.django_db
def test_days_read_live_cost_no_extra_query():
    user = superuser()
    create(spread(100, "q"))
    counts = {}
    for state in ("unrolled", "rolled up"):
        if state == "rolled up":
            refresh_rollups()
        for days in ("1", "7", "30"):
            with CaptureQueriesContext(connection) as queries:
                get_page(user, days=days)
            counts[state, days] = len(queries)
    assert len(set(counts.values())) == 1, counts


@pytest.mark.django_db
def test_stale_purchases_of_unrolled_days_are_counted():
    """In flight for hours on a day not rolled up yet: stale, read from the live rows."""
    create(
        [
            event("order_old", Status.PENDING, age=timedelta(days=3)),
            event("order_older", Status.SENDING, age=timedelta(days=5)),
            event("order_new", Status.PENDING),
        ]
    )
    summary = dashboard_context(7)["summary"]
    assert (summary["in_flight"], summary["stale_in_flight"]) == (3, 2)
    refresh_rollups()
    rolled_up = dashboard_context(7)["summary"]
    assert (rolled_up["in_flight"], rolled_up["stale_in_flight"]) == (3, 2)


@pytest.mark.django_db
def test_configuration_line_judges_what_is_stored(settings):
    def config_item():
        context = dashboard_context(7)
        return next(i for i in context["checklist"] if i.key == "config_recorded")

    item = config_item()
    assert (item.status, item.detail) == (WARN, "No configuration recorded yet.")
    assert not ConfigChange.objects.exists()
    record_config_if_changed()
    assert config_item().status == PASS
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "PURCHASE_EVENT": "CompletePayment"}
    item = config_item()
    assert item.status == WARN
    assert timezone.localdate().isoformat() in item.detail
    record_config_if_changed()
    item = config_item()
    assert (item.status, ConfigChange.objects.count()) == (PASS, 2)
    assert "2 changes recorded" in item.detail


def test_the_checklist_is_one_table_of_rules():
    keys = [rule.key for rule in RULES]
    assert keys == [
        "pixel_fires",
        "server_delivers",
        "ids_match",
        "names_match",
        "orders_reconcile",
        "dedup_visible",
        "match_quality",
        "consent_policy",
        "rule_scope",
        "config_recorded",
    ]
    for rule in RULES:
        # Every rule ends with a case that always holds: each is judged whatever the facts.
        assert rule.cases[-1].when({}) is True, rule.key
    facts = HealthFacts(purchase_event="Purchase")
    assert [item.key for item in evaluate_checklist(facts)] == keys
