"""Requests bounded in bytes: how a batch is cut below MAX_REQUEST_BYTES, and its system check."""

import json
from itertools import pairwise

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tiktok_tracking import checks, delivery
from tiktok_tracking.delivery import (
    ClaimedRow,
    DrainReport,
    byte_capped_runs,
    capped_requests,
    halve_by_bytes,
    request_bytes,
    request_sizes,
)
from tiktok_tracking.pixels import configured_pixels

sizes_strategy = st.lists(st.integers(min_value=1, max_value=5000), max_size=60)


def tracking(**overrides):
    return override_settings(TIKTOK_TRACKING={**settings.TIKTOK_TRACKING, **overrides})


@given(
    sizes=sizes_strategy,
    cap=st.integers(min_value=1, max_value=40_000),
    envelope=st.integers(0, 200),
)
def test_runs_keep_every_item_once_in_order_and_each_request_within_the_cap(sizes, cap, envelope):
    runs = byte_capped_runs(sizes, cap, envelope)
    # Consecutive, covering every item once, in order.
    assert [index for start, stop in runs for index in range(start, stop)] == list(
        range(len(sizes))
    )
    assert all(stop > start for start, stop in runs)
    for start, stop in runs:
        body = request_bytes(envelope, sizes[start:stop])
        # Over the cap only as an item alone, which no cut can help.
        assert body <= cap or stop - start == 1
    # No request cut short needlessly: the next item would not have fitted.
    for (start, stop), _next in pairwise(runs):
        assert request_bytes(envelope, sizes[start : stop + 1]) > cap


@given(sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=2, max_size=60))
def test_halving_leaves_an_item_on_each_side_and_about_half_the_bytes(sizes):
    cut = halve_by_bytes(sizes)
    assert 1 <= cut <= len(sizes) - 1
    half = sum(sizes) / 2
    assert sum(sizes[:cut]) <= half + max(sizes)
    assert sum(sizes[cut:]) <= half + max(sizes)


# Item texts as the outbox stores them: compact (SQLite) or spaced (PostgreSQL's jsonb), with
# characters outside ASCII, whose UTF-8 takes more bytes than characters.
item_strategy = st.builds(
    lambda name, lines, spaced: json.dumps(
        {
            "event": "Purchase",
            "event_id": name,
            "properties": {"contents": ["é" * n for n in lines]},
        },
        ensure_ascii=False,
        separators=(", ", ": ") if spaced else (",", ":"),
    ),
    st.text(max_size=30),
    st.lists(st.integers(min_value=0, max_value=300), max_size=8),
    st.booleans(),
)


def claimed(payloads):
    now = timezone.now()
    return [
        ClaimedRow(pk, "CTESTPIXEL0001", "Purchase", f"e{pk}", "", "", "", "US", 1, now, "t", text)
        for pk, text in enumerate(payloads, start=1)
    ]


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(item_strategy, max_size=25),
    slack=st.integers(min_value=0, max_value=20_000),
    test_event_code=st.sampled_from([None, "TEST123", "TÉST"]),
)
def test_requests_as_encoded_stay_within_the_cap_and_carry_each_event_once(
    payloads, slack, test_event_code
):
    pixel = configured_pixels()[0]
    rows = claimed(payloads)
    with tracking(PARTNER_NAME="Partnér"):
        envelope, sizes = request_sizes(pixel, test_event_code, rows)
    # A cap every single event fits under: nothing is failed, so nothing touches the database.
    cap = envelope + max(sizes, default=0) + slack
    with tracking(MAX_REQUEST_BYTES=cap, PARTNER_NAME="Partnér"):
        parts = capped_requests(pixel, test_event_code, rows, DrainReport())
        bodies = [delivery._request(pixel, test_event_code, part)[0] for part in parts]
        whole = delivery._request(pixel, test_event_code, rows)[0]
    if rows:
        # Measured without encoding, to the byte.
        assert request_bytes(envelope, sizes) == len(whole)
    assert [row for part in parts for row in part] == rows
    for part, body in zip(parts, bodies, strict=True):
        assert len(body) <= cap
        assert [item["event_id"] for item in json.loads(body)["data"]] == [
            json.loads(row.payload_json)["event_id"] for row in part
        ]
    if rows and request_bytes(envelope, sizes) <= cap:
        # Under the cap, one request, encoded once.
        assert parts == [rows]


def test_a_batch_under_the_cap_is_one_request_of_the_same_rows():
    pixel = configured_pixels()[0]
    rows = claimed(['{"event_id":"a"}', '{"event_id":"b"}'])
    with tracking(MAX_REQUEST_BYTES=1024):
        parts = capped_requests(pixel, None, rows, DrainReport())
    assert len(parts) == 1 and parts[0] is rows


# The system check -----------------------------------------------------------------------------


def ids(errors):
    return [error.id for error in errors]


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "512kb", None])
def test_check_refuses_a_cap_that_is_not_a_positive_whole_number(value):
    with tracking(MAX_REQUEST_BYTES=value):
        errors = checks.check_settings()
    assert "tiktok_tracking.E022" in ids(errors)
    message = next(error.msg for error in errors if error.id == "tiktok_tracking.E022")
    assert "MAX_REQUEST_BYTES" in message


def test_check_warns_about_a_cap_above_the_smallest_known_proxy_limit():
    with tracking(MAX_REQUEST_BYTES=delivery.SMALLEST_KNOWN_BODY_LIMIT + 1):
        errors = checks.check_settings()
    assert "tiktok_tracking.W008" in ids(errors)
    with tracking(MAX_REQUEST_BYTES=delivery.SMALLEST_KNOWN_BODY_LIMIT):
        assert not {"tiktok_tracking.W008", "tiktok_tracking.E022"} & set(
            ids(checks.check_settings())
        )


def test_the_default_cap_is_below_the_smallest_known_limit():
    from tiktok_tracking import conf

    assert conf.get("MAX_REQUEST_BYTES") < delivery.SMALLEST_KNOWN_BODY_LIMIT
    assert not {"tiktok_tracking.W008", "tiktok_tracking.E022"} & set(ids(checks.check_settings()))


def test_a_full_batch_of_typical_purchases_goes_whole_under_the_default_cap():
    """A cut batch costs a second round trip to TikTok on the one sending thread: the default
    leaves the usual full batch whole (bench.delivery's purchases, spaced as PostgreSQL's jsonb
    returns them, the longer form)."""
    from bench.delivery import order_event
    from tiktok_tracking import conf

    now = timezone.now()
    rows = claimed(json.dumps(order_event(number, now).payload) for number in range(1000))
    envelope, sizes = request_sizes(configured_pixels()[0], None, rows)
    assert request_bytes(envelope, sizes) <= conf.get("MAX_REQUEST_BYTES")
