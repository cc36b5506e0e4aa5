"""``subscribe`` and ``ack`` requests as the socket API reads them, and the push line it writes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from switch.domain.events import Event
from switch.gateway.errors import ApiError
from switch.gateway.notifications import AckRequest, SubscribeRequest, parse_ack, parse_subscribe, push_line
from switch.gateway.wire import encode


def refused(parse, obj):
    with pytest.raises(ApiError) as caught:
        parse({"id": 1, **obj})
    return caught.value.code.value, caught.value.field


def test_subscribe_to_all_or_some_merchants():
    assert parse_subscribe({"id": 1, "op": "subscribe"}) == SubscribeRequest(None)
    assert parse_subscribe({"id": 1, "op": "subscribe", "merchant_ids": None}) == SubscribeRequest(None)
    assert parse_subscribe({"id": 1, "op": "subscribe", "merchant_ids": ["m1", "m2", "m1"]}) == SubscribeRequest(
        frozenset({"m1", "m2"})
    )


@pytest.mark.parametrize("obj, field", [
    ({"merchant_ids": []}, "merchant_ids"),
    ({"merchant_ids": "m1"}, "merchant_ids"),
    ({"merchant_ids": ["m1", 2]}, "merchant_ids"),
    ({"merchant_ids": ["bad id"]}, "merchant_ids"),
    ({"merchant_ids": ["m"] * 501}, "merchant_ids"),
    ({"merchants": ["m1"]}, "merchants"),
])
def test_subscribe_refusals(obj, field):
    assert refused(parse_subscribe, {"op": "subscribe", **obj}) == ("invalid_request", field)


def test_ack_one_or_many():
    assert parse_ack({"id": 1, "op": "ack", "event_id": "42"}) == AckRequest((42,), "event_id")
    assert parse_ack({"id": 1, "op": "ack", "event_ids": ["3", "1"]}) == AckRequest((3, 1), "event_ids")
    assert parse_ack({"id": 1, "op": "ack", "event_id": "9223372036854775807"}).event_ids == (2**63 - 1,)


@pytest.mark.parametrize("obj, field", [
    ({}, "event_id"),
    ({"event_id": "1", "event_ids": ["2"]}, "event_id"),
    ({"event_id": 1}, "event_id"),
    ({"event_id": "0"}, "event_id"),
    ({"event_id": "01"}, "event_id"),
    ({"event_id": "9223372036854775808"}, "event_id"),
    ({"event_ids": []}, "event_ids"),
    ({"event_ids": [1]}, "event_ids"),
    ({"event_ids": ["1"] * 501}, "event_ids"),
    ({"event_ids": ["1"], "extra": True}, "extra"),
])
def test_ack_refusals(obj, field):
    assert refused(parse_ack, {"op": "ack", **obj}) == ("invalid_request", field)


def test_push_line_has_no_id_a_string_event_id_and_lifts_status_and_reason():
    event = Event(
        event_id=12, merchant_id="M100", txn_id="T1", type="payment.late_response",
        payload={"txn_id": "T1", "response_code": "00", "approved": True, "status": "timeout"},
        created_at=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    )
    line = json.loads(encode(push_line(event)))
    assert line == {
        "event": "payment.late_response", "event_id": "12", "txn_id": "T1", "merchant_id": "M100",
        "created_at": "2030-01-02T03:04:05.678Z", "status": "timeout",
        "data": {"txn_id": "T1", "response_code": "00", "approved": True, "status": "timeout"},
    }
