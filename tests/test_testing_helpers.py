"""tiktok_tracking.testing: the recording client, its assertions, and the E020 check."""

from decimal import Decimal

import pytest

from tests.test_outbox import make_order, pay, tracking
from tiktok_tracking import testing
from tiktok_tracking.client import EventsApiClient, configured_client


@pytest.fixture
def us_order(db):
    return make_order("T1", country="US")


def test_the_recording_client_is_chosen_by_the_setting():
    assert isinstance(configured_client(), EventsApiClient)
    with testing.recording():
        assert isinstance(configured_client(), testing.RecordingClient)


@pytest.mark.django_db
def test_delivery_through_the_recorder_records_the_request_and_marks_the_row_delivered(
    us_order,
):
    with testing.recording() as recorder:
        pay(us_order)
        report = recorder.deliver()
        [request] = recorder.sent
    assert report.delivered == 1
    assert request.had_token and request.pixel_code == "CTESTPIXEL0001"
    [row] = testing.tracked_events(us_order)
    assert (row.status, row.last_request_id) == ("delivered", "recorded-1")
    assert request.events[0]["event_id"] == row.event_id


@pytest.mark.django_db
def test_assert_purchase_tracked_names_what_it_found(us_order):
    with testing.recording():
        with pytest.raises(AssertionError, match="No Purchase event recorded for order T1"):
            testing.assert_purchase_tracked(us_order)
        pay(us_order)
        row = testing.assert_purchase_tracked(us_order, currency="USD")
        with pytest.raises(AssertionError, match=r"purchase value is 89\.99, not 10$"):
            testing.assert_purchase_tracked(us_order, value=Decimal("10"))
        testing.deliver_now()
        # The request carries what the outbox holds.
        testing.sent[0].events[0]["properties"]["value"] = 1.0
        with pytest.raises(AssertionError, match="the request sent"):
            testing.assert_purchase_tracked(us_order)
    assert row.event_id == "order_T1"


@pytest.mark.django_db
def test_assert_nothing_sent_lists_what_went(us_order):
    with testing.recording():
        testing.assert_nothing_sent()
        pay(us_order)
        testing.deliver_now()
        with pytest.raises(AssertionError, match=r"1 request\(s\) sent to TikTok: \['Purchase "):
            testing.assert_nothing_sent()


def test_rendered_events_read_the_pages_track_calls():
    html = (
        '<script>window.ttq.track("ViewContent", {"value": 1});\n'
        'window.ttq.track("Purchase", {"value": 2.5}, {"event_id": "order_7"});</script>'
    )
    assert testing.rendered_events(html) == [
        ("ViewContent", {"value": 1}, {}),
        ("Purchase", {"value": 2.5}, {"event_id": "order_7"}),
    ]
    assert testing.thank_you_event_ids(html) == ["order_7"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("shop.nowhere.Client", "cannot be imported"),
        ("tiktok_tracking.testing.reset", "has no from_settings, send, send_encoded, close"),
    ],
)
def test_a_bad_events_api_client_is_e020(path, message):
    from tiktok_tracking.checks import check_settings

    with tracking(EVENTS_API_CLIENT=path):
        errors = [e for e in check_settings() if e.id == "tiktok_tracking.E020"]
    assert len(errors) == 1 and message in errors[0].msg, errors
    with testing.recording():
        assert not [e for e in check_settings() if e.id == "tiktok_tracking.E020"]
