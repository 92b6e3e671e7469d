"""The dashboard's market table in Chromium: a broken market shows red with its reason."""

from datetime import timedelta

from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from selenium.webdriver.common.by import By

from tests.browser.test_demo_purchase import ARTIFACTS
from tests.factories import outbox_rows
from tiktok_tracking import rollups
from tiktok_tracking.models import TrackedEvent
from tiktok_tracking.readiness import store

DASHBOARD = "/admin/tiktok_tracking/trackedevent/dashboard/"


def purchases(count, prefix, country, seen):
    rows = outbox_rows(count, prefix=prefix, country=country)
    TrackedEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=TrackedEvent.Status.DELIVERED,
        delivered_at=timezone.now(),
        browser_seen_at=seen,
        match_keys=rollups.key_mask("email", "ttclid", "ip", "user_agent"),
    )
    return rows


def log_in(browser, live_server):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    browser.get(live_server.url + "/admin/login/")
    browser.add_cookie(
        {
            "name": django_settings.SESSION_COOKIE_NAME,
            "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
            "path": "/",
        }
    )


def test_the_market_table_shows_each_verdict_with_its_reasons(browser, live_server, settings):
    # Judged on the recorded purchases: the test shop's paid orders are not made here.
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "PAID_ORDERS": None}
    purchases(25, "us", "US", timezone.now())
    # A theme release broke the pixel in Germany: its last receipt is three hours old.
    purchases(20, "de", "DE", timezone.now() - timedelta(hours=3))
    fresh = purchases(5, "de_after", "DE", None)
    assert fresh
    store.assess()

    log_in(browser, live_server)
    browser.get(live_server.url + DASHBOARD)
    table = browser.find_element(By.ID, "readiness")
    rows = {
        row.find_element(By.TAG_NAME, "th").text: row
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert set(rows) == {"US", "DE"}
    assert rows["DE"].find_element(By.CSS_SELECTOR, ".badge").text == "not ready"
    assert "pixel receipts stopped at" in rows["DE"].text
    assert rows["US"].find_element(By.CSS_SELECTOR, ".badge").text == "ready"
    # Worst first, as the report orders them.
    assert [
        r.find_element(By.TAG_NAME, "th").text
        for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ] == ["DE", "US"]

    folder = ARTIFACTS / "readiness"
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "market-table.png"
    browser.execute_script("arguments[0].scrollIntoView()", table)
    assert table.screenshot(str(shot))
    assert shot.stat().st_size > 1000
