"""Consent: the policy, client ip, the consent endpoint, and the lane/region/state matrix."""

from pathlib import Path

import pytest
from django.test import Client, RequestFactory
from hypothesis import given
from hypothesis import strategies as st

from tests.factories import make_order
from tiktok_tracking import delivery
from tiktok_tracking.consent import (
    BROWSER,
    DENIED,
    GRANTED,
    SERVER,
    ConsentPolicy,
    decide,
    policy_from_settings,
)
from tiktok_tracking.models import ConsentRecord, TrackedEvent
from tiktok_tracking.signals import payment_completed
from tiktok_tracking.visitor import client_ip

Status = TrackedEvent.Status
ROOT = Path(__file__).resolve().parent.parent
COUNTRY_HEADER_FIX = 'TIKTOK_TRACKING["COUNTRY_HEADER"] = "HTTP_CF_IPCOUNTRY"'
# Where each page's install steps end: what they must say comes before it.
INSTALL_STEPS = {
    ROOT / "README.md": "### At checkout",
    ROOT / "docs" / "integration.md": "## The order adapter",
}
POLICY = ConsentPolicy(
    opt_in_countries=frozenset({"DE", "FR", "GB", "CH"}),
    limited_data_use_countries=frozenset({"US"}),
)


@pytest.mark.parametrize(
    "country, status, lane, allowed, hold, ldu",
    [
        ("DE", None, BROWSER, False, True, False),
        ("DE", None, SERVER, False, False, False),
        ("DE", GRANTED, SERVER, True, False, False),
        ("DE", DENIED, BROWSER, False, False, False),
        ("US", None, SERVER, True, False, False),
        ("US", DENIED, BROWSER, True, False, True),
        ("US", DENIED, SERVER, True, False, True),
        ("BR", None, BROWSER, True, False, False),
        ("BR", DENIED, SERVER, False, False, False),
        (None, None, BROWSER, False, True, False),
        (None, None, SERVER, False, False, False),
        (None, GRANTED, SERVER, True, False, False),
        ("de", GRANTED, BROWSER, True, False, False),
    ],
)
def test_decide(country, status, lane, allowed, hold, ldu):
    decision = decide(POLICY, lane=lane, country=country, status=status)
    assert (decision.allowed, decision.hold, decision.limited_data_use) == (allowed, hold, ldu)
    assert decision.reason


def test_global_privacy_control_is_an_opt_out_in_the_us_only():
    us = decide(POLICY, lane=SERVER, country="US", status=None, global_privacy_control=True)
    assert us.allowed and us.limited_data_use and "Global Privacy Control" in us.reason
    br = decide(POLICY, lane=SERVER, country="BR", status=None, global_privacy_control=True)
    assert br.allowed and not br.limited_data_use


def test_unknown_country_can_be_configured_as_opt_out():
    lenient = ConsentPolicy(frozenset({"DE"}), frozenset(), unknown_country="opt_out")
    assert decide(lenient, lane=SERVER, country=None, status=None).allowed


def test_default_policy_covers_eu_eea_uk_and_switzerland():
    policy = policy_from_settings()
    assert {"DE", "FR", "IE", "NO", "IS", "LI", "GB", "CH"} <= policy.opt_in_countries
    assert "US" not in policy.opt_in_countries


@given(
    country=st.sampled_from(["DE", "US", "BR", None, "GB"]),
    status=st.sampled_from([None, GRANTED, DENIED]),
)
def test_server_never_sends_where_the_browser_may_not_load(country, status):
    browser = decide(POLICY, lane=BROWSER, country=country, status=status)
    server = decide(POLICY, lane=SERVER, country=country, status=status)
    assert server.allowed == browser.allowed
    assert not server.hold


@pytest.mark.parametrize(
    "remote, forwarded, trusted, expected",
    [
        ("203.0.113.9", "", (), "203.0.113.9"),
        # Not behind a trusted proxy: X-Forwarded-For is the client's own claim.
        ("203.0.113.9", "198.51.100.1", (), "203.0.113.9"),
        ("10.0.0.2", "198.51.100.1", ("10.0.0.0/8",), "198.51.100.1"),
        # A forged left-most entry is ignored: the right-most untrusted hop is the client.
        ("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.3", ("10.0.0.0/8",), "198.51.100.1"),
        ("10.0.0.2", "not-an-ip", ("10.0.0.0/8",), None),
        ("garbage", "", (), None),
        ("::1", "", (), "::1"),
    ],
)
def test_client_ip(remote, forwarded, trusted, expected):
    assert client_ip(remote, forwarded, trusted) == expected


@pytest.mark.django_db
def test_consent_endpoint_appends_to_the_log_and_sets_the_cookie():
    client = Client()
    client.cookies["country"] = "DE"
    assert client.post("/tiktok/consent/", {"status": "granted"}).json()["allowed"] is True
    response = client.post("/tiktok/consent/", {"status": "denied", "source": "cmp"})
    assert response.json() == {
        "ok": True,
        "status": "denied",
        "allowed": False,
        "limited_data_use": False,
    }
    records = list(ConsentRecord.objects.order_by("created_at", "pk"))
    assert [(r.status, r.source, r.country) for r in records] == [
        ("granted", "banner", "DE"),
        ("denied", "cmp", "DE"),
    ]
    assert len({r.visitor_id for r in records}) == 1
    assert ConsentRecord.latest_statuses([records[0].visitor_id]) == {
        records[0].visitor_id: "denied"
    }


@pytest.mark.django_db
def test_consent_endpoint_rejects_bad_input_and_cross_site_posts():
    assert Client().post("/tiktok/consent/", {"status": "maybe"}).status_code == 400
    assert Client().put("/tiktok/consent/").status_code == 405
    assert (
        Client(enforce_csrf_checks=True).post("/tiktok/consent/", {"status": "granted"}).status_code
        == 403
    )
    assert not ConsentRecord.objects.exists()


@pytest.mark.django_db
def test_consent_get_answers_the_state_and_the_token_the_post_needs():
    client = Client(enforce_csrf_checks=True)
    client.cookies["country"] = "DE"
    response = client.get("/tiktok/consent/")
    state = response.json()
    token = state.pop("csrf_token")
    assert state == {"ok": True, "status": None, "allowed": False, "limited_data_use": False}
    # The token and the cookie it pairs with must never be cached for another visitor.
    assert "no-store" in response["Cache-Control"]
    assert not ConsentRecord.objects.exists()

    granted = client.post("/tiktok/consent/", {"status": "granted"}, headers={"X-CSRFToken": token})
    assert granted.status_code == 200
    assert client.get("/tiktok/consent/").json()["status"] == "granted"
    assert ConsentRecord.objects.get().status == "granted"


@pytest.mark.django_db
def test_consent_from_an_older_policy_version_is_asked_again(settings):
    client = Client()
    client.cookies["country"] = "DE"
    client.post("/tiktok/consent/", {"status": "granted"})
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "CONSENT_POLICY_VERSION": "2"}
    response = client.get("/thanks/none/")  # any request: the middleware reads the cookie
    assert response.wsgi_request.tiktok.consent_status is None


# The matrix ---------------------------------------------------------------------------------

REGIONS = ["DE", "US", "BR", ""]  # opt-in, limited data use, opt-out, unknown
STATES = ["none", "granted", "denied", "withdrawn"]

# (region, state) -> (pixel on the thank-you page, server row status, limited_data_use sent)
EXPECTED = {
    ("DE", "none"): ("hold", Status.SUPPRESSED, None),
    ("DE", "granted"): ("on", Status.DELIVERED, False),
    ("DE", "denied"): ("off", Status.SUPPRESSED, None),
    ("DE", "withdrawn"): ("on", Status.SUPPRESSED, None),
    ("US", "none"): ("on", Status.DELIVERED, False),
    ("US", "granted"): ("on", Status.DELIVERED, False),
    ("US", "denied"): ("ldu", Status.DELIVERED, True),
    ("US", "withdrawn"): ("on", Status.DELIVERED, True),
    ("BR", "none"): ("on", Status.DELIVERED, False),
    ("BR", "granted"): ("on", Status.DELIVERED, False),
    ("BR", "denied"): ("off", Status.SUPPRESSED, None),
    ("BR", "withdrawn"): ("on", Status.SUPPRESSED, None),
    ("", "none"): ("hold", Status.SUPPRESSED, None),
    ("", "granted"): ("on", Status.DELIVERED, False),
    ("", "denied"): ("off", Status.SUPPRESSED, None),
    ("", "withdrawn"): ("on", Status.SUPPRESSED, None),
}


def pixel_state(html):
    if "ttq.load(" not in html:
        assert "<!-- TikTok pixel: off" in html
        assert "ttq.track(" not in html
        return "off"
    if "ttq.holdConsent()" in html:
        return "hold"
    if "limited_data_use" in html.split("ttq.load(", 1)[1].split(")", 1)[0]:
        return "ldu"
    return "on"


@pytest.mark.django_db
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("region", REGIONS)
def test_consent_matrix(region, state, sandbox):
    number = f"M-{region or 'XX'}-{state}"
    client = Client()
    if region:
        client.cookies["country"] = region
    if state != "none":
        choice = "denied" if state == "denied" else "granted"
        assert client.post("/tiktok/consent/", {"status": choice}).status_code == 200

    client.post("/checkout/", {"number": number, "email": "a@example.com", "country": region})
    client.post(f"/pay/{number}/")
    html = client.get(f"/thanks/{number}/").content.decode()
    if state == "withdrawn":
        client.post("/tiktok/consent/", {"status": "denied"})
    delivery.deliver_due_events()

    pixel, status, ldu = EXPECTED[(region, state)]
    assert pixel_state(html) == pixel
    row = TrackedEvent.objects.get(order_id=number, event="Purchase")
    assert row.status == status, row.suppressed_reason
    sent = [e for e in sandbox.events() if e["event_id"] == f"order_{number}"]
    if status == Status.DELIVERED:
        assert len(sent) == 1
        assert bool(sent[0]["item"].get("limited_data_use")) is ldu
    else:
        assert sent == []
        assert row.suppressed_reason
        if state == "withdrawn":
            assert row.suppressed_reason.startswith("consent changed before delivery")


def test_without_a_country_source_the_first_purchase_is_suppressed_as_the_install_steps_say(
    db, settings
):
    settings.TIKTOK_TRACKING = {
        **settings.TIKTOK_TRACKING,
        "ORDER_ADAPTER": "tiktok_tracking.adapters.OrderAdapter",
        "COUNTRY_RESOLVER": None,
        "COUNTRY_HEADER": None,
    }
    visitor = RequestFactory().get("/checkout/return/", HTTP_CF_IPCOUNTRY="US")
    payment_completed.send(sender=object, order=make_order(country=None), request=visitor)
    [row] = TrackedEvent.objects.all()
    assert row.status == Status.SUPPRESSED
    for page, end in INSTALL_STEPS.items():
        text = page.read_text(encoding="utf-8")
        steps = " ".join(text[: text.index(end)].split())  # prose wraps lines anywhere
        assert row.suppressed_reason in steps, page.name
        assert COUNTRY_HEADER_FIX in steps, page.name

    # The documented line is the fix: the same purchase, from a US visitor, is sent.
    settings.TIKTOK_TRACKING = {**settings.TIKTOK_TRACKING, "COUNTRY_HEADER": "HTTP_CF_IPCOUNTRY"}
    visitor = RequestFactory().get("/checkout/return/", HTTP_CF_IPCOUNTRY="US")
    payment_completed.send(
        sender=object, order=make_order(country=None, order_id=1008), request=visitor
    )
    row = TrackedEvent.objects.get(order_id="1008")
    assert row.status == Status.PENDING
    assert row.country == "US"
