"""No access token, raw email or raw phone in logs, admin pages, error reports or TikTok's hands."""

import logging

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.views.debug import ExceptionReporter

from tiktok_tracking import client as client_module
from tiktok_tracking import delivery
from tiktok_tracking.models import TrackedEvent

EMAIL = "Private.Person+tiktok@Example.org"
PHONE = "+1 202 555 0199"
# How a leak could look: as given, normalised, or with the phone's digits run together.
EMAIL_FORMS = (EMAIL, EMAIL.lower())
PHONE_FORMS = (PHONE, "+12025550199", "2025550199")

pytestmark = pytest.mark.django_db


def secrets():
    return (settings.TIKTOK_TRACKING["ACCESS_TOKEN"], *EMAIL_FORMS, *PHONE_FORMS)


def leaks(text):
    return [secret for secret in secrets() if secret in text]


class Everything(logging.Handler):
    """Every log record of the run, formatted with its traceback, whatever its logger."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs():
    handler = Everything()
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


def shop_orders(client, count, prefix):
    for index in range(count):
        number = f"{prefix}{index}"
        client.post(
            "/checkout/?ttclid=click-1",
            {"number": number, "email": EMAIL, "phone": PHONE, "country": "US"},
        )
        assert client.post(f"/pay/{number}/").status_code == 200


def drain_until_settled():
    for _ in range(6):
        delivery.deliver_due_events(max_seconds=1)
        # Retries fall due now rather than after their backoff.
        TrackedEvent.objects.filter(status=TrackedEvent.Status.PENDING).update(
            next_attempt_at=TrackedEvent.objects.values("created_at")[:1]
        )


def test_a_full_run_shows_no_token_email_or_phone_anywhere(sandbox, all_logs):
    shopper = Client()
    shopper.cookies["country"] = "US"
    shop_orders(shopper, 4, "S")
    # Every kind of answer TikTok gives, so every outcome path writes its logs and rows.
    sandbox.program(
        [
            {"status": 503},
            {"code": 40002, "message": "data.1.user.email: Invalid hashed value."},
            {"status": 200, "body": "<html>gateway</html>"},
            {"code": 40100, "message": "Too many requests"},
        ]
    )
    drain_until_settled()
    shop_orders(shopper, 1, "R")
    sandbox.program([{"code": 40001, "message": "Access token is invalid."}])
    drain_until_settled()

    statuses = set(TrackedEvent.objects.values_list("status", flat=True))
    assert {TrackedEvent.Status.DELIVERED, TrackedEvent.Status.FAILED} <= statuses
    assert len(sandbox.requests) >= 5

    # What TikTok received: hashed keys only, the token only in its header.
    for request in sandbox.requests:
        assert leaks(str(request["body"])) == []
        assert leaks(str(request["headers"])) == []
        assert request["access_token_present"]

    # The admin, as a superuser sees it.
    get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    staff = Client()
    staff.login(username="root", password="pw")
    pages = [
        "/admin/tiktok_tracking/trackedevent/",
        "/admin/tiktok_tracking/trackedevent/dashboard/",
        *(
            f"/admin/tiktok_tracking/trackedevent/{pk}/change/"
            for pk in TrackedEvent.objects.values_list("pk", flat=True)
        ),
    ]
    for page in pages:
        response = staff.get(page)
        assert response.status_code == 200, page
        assert leaks(response.content.decode()) == [], page

    # An error report of a crash in delivery (a bug while reading TikTok's answer).
    shop_orders(shopper, 1, "C")
    original = client_module.classify_response

    def crash(*args, **kwargs):
        raise RuntimeError("answer could not be read")

    client_module.classify_response = crash
    try:
        with pytest.raises(RuntimeError) as crashed:
            delivery.deliver_due_events(max_seconds=1)
        report = ExceptionReporter(None, crashed.type, crashed.value, crashed.tb)
    finally:
        client_module.classify_response = original
    assert "answer could not be read" in report.get_traceback_text()
    assert leaks(report.get_traceback_text()) == []
    assert leaks(report.get_traceback_html()) == []

    logged = "\n".join(all_logs.lines)
    assert "TikTok" in logged  # the run did log
    assert leaks(logged) == []
