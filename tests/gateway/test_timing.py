"""Where time matters, a `Clock` stands in for the reactor: hello timeout and request durations."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from switch.gateway.config import ApiLimits
from switch.gateway.protocol import ApiFactory

from .conftest import WEB1_TOKEN, FakePaymentService, authorize_request, make_config


def connect(limits: ApiLimits | None = None):
    clock, service, registry = Clock(), FakePaymentService(), CollectorRegistry()
    factory = ApiFactory(service, make_config(limits), clock, registry=registry)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.2.3", 40000))
    protocol.makeConnection(transport)
    return clock, service, registry, protocol, transport


def send(protocol, request) -> None:
    protocol.dataReceived(json.dumps(request).encode() + b"\n")


def answers(transport) -> list[dict]:
    return [json.loads(line) for line in transport.value().splitlines()]


def test_a_connection_that_never_says_hello_is_closed_after_the_hello_timeout():
    clock, _, _, protocol, transport = connect(ApiLimits(hello_timeout=30))
    send(protocol, {"id": 1, "op": "ping"})
    clock.advance(29.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert answers(transport)[-1]["error"]["code"] == "unauthenticated"
    assert answers(transport)[-1]["id"] is None
    assert transport.disconnecting


def test_a_successful_hello_cancels_the_hello_timeout():
    clock, _, _, protocol, transport = connect(ApiLimits(hello_timeout=30, idle_timeout=0))
    send(protocol, {"id": 1, "op": "hello", "client": "web-1", "token": WEB1_TOKEN})
    clock.advance(3600)
    assert not transport.disconnecting
    assert clock.getDelayedCalls() == []


def test_hello_timeout_zero_disables_it():
    clock, _, _, _, transport = connect(ApiLimits(hello_timeout=0))
    assert clock.getDelayedCalls() == []
    clock.advance(86400)
    assert not transport.disconnecting


def test_durations_come_from_the_injected_clock():
    clock, service, registry, protocol, transport = connect()
    send(protocol, {"id": 1, "op": "hello", "client": "web-1", "token": WEB1_TOKEN})
    send(protocol, authorize_request(id=2, order_id="hold-1"))
    clock.advance(1.5)
    with capture_logs() as logs:
        service.release("hold-1")
    assert answers(transport)[-1]["status"] == "approved"
    assert registry.get_sample_value("kswitch_api_request_duration_seconds_sum", {"op": "authorize"}) == 1.5
    [event] = [entry for entry in logs if entry["event"] == "api_request"]
    assert event["duration_ms"] == 1500.0
    assert event["peer"] == "10.1.2.3:40000"


def test_answers_stop_reading_when_the_client_stops_reading():
    _, _, _, protocol, transport = connect()
    assert transport.producer is protocol
    protocol.pauseProducing()
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"


def test_too_large_stops_reading_for_good():
    _, _, _, protocol, transport = connect(ApiLimits(max_line_bytes=16))
    protocol.dataReceived(b"x" * 40)
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "paused"
    protocol.dataReceived(b'{"id": 1, "op": "ping"}\n')
    assert [a["error"]["code"] for a in answers(transport)] == ["too_large"]
    assert transport.disconnecting


def closed_reasons(logs) -> list[str]:
    return [entry["reason"] for entry in logs if entry["event"] == "api_connection_closed_by_server"]


def test_a_partial_line_gets_line_timeout_from_its_first_byte():
    clock, _, _, protocol, transport = connect(ApiLimits(line_timeout=30, idle_timeout=0))
    send(protocol, {"id": 1, "op": "hello", "client": "web-1", "token": WEB1_TOKEN})
    protocol.dataReceived(b'{"id": 2,')
    for _ in range(29):  # one byte a second does not buy more time
        clock.advance(1)
        protocol.dataReceived(b" ")
    assert not transport.disconnecting
    with capture_logs() as logs:
        clock.advance(1)
    assert transport.disconnecting
    assert answers(transport)[-1]["error"]["code"] == "invalid_request" and answers(transport)[-1]["id"] is None
    assert closed_reasons(logs) == ["line_timeout"]


def test_each_line_gets_its_own_line_timeout():
    clock, _, _, protocol, transport = connect(ApiLimits(line_timeout=30, idle_timeout=0, hello_timeout=0))
    for request_id in range(5):
        protocol.dataReceived(b'{"id": %d, "op"' % request_id)
        clock.advance(20)
        protocol.dataReceived(b': "ping"}\n{"id": 99,')  # the next line starts in the same segment
        protocol.dataReceived(b' "op": "ping"}\n')
    clock.advance(3600)
    assert not transport.disconnecting
    assert [a["id"] for a in answers(transport)] == [0, 99, 1, 99, 2, 99, 3, 99, 4, 99]


def test_an_idle_authenticated_connection_is_closed_but_pings_and_requests_in_flight_keep_it():
    clock, service, _, protocol, transport = connect(ApiLimits(idle_timeout=60))
    send(protocol, {"id": 1, "op": "hello", "client": "web-1", "token": WEB1_TOKEN})
    clock.advance(50)
    send(protocol, {"id": 2, "op": "ping"})
    clock.advance(50)
    protocol.dataReceived(b"\n")  # a blank line is a keep-alive too
    clock.advance(50)
    send(protocol, authorize_request(id=3, order_id="hold-1"))
    clock.advance(600)  # the bank is slow: not idle
    service.release("hold-1")
    clock.advance(59)
    assert not transport.disconnecting
    with capture_logs() as logs:
        clock.advance(1)
    assert transport.disconnecting
    assert closed_reasons(logs) == ["idle_timeout"]
    assert [a["id"] for a in answers(transport)] == [1, 2, 3]


def test_a_client_that_stops_reading_is_not_blamed_for_its_unfinished_line():
    clock, _, _, protocol, transport = connect(ApiLimits(line_timeout=30, idle_timeout=0, hello_timeout=0))
    protocol.dataReceived(b'{"id": 1,')
    protocol.pauseProducing()
    clock.advance(120)
    assert not transport.disconnecting
    protocol.resumeProducing()
    clock.advance(30)
    assert transport.disconnecting


def test_a_failed_hello_restarts_the_hello_timeout():
    clock, _, _, protocol, transport = connect(ApiLimits(hello_timeout=30, idle_timeout=0))
    send(protocol, {"id": 1, "op": "hello", "client": "web-1", "token": WEB1_TOKEN})
    clock.advance(100)
    send(protocol, {"id": 2, "op": "hello", "client": "web-1", "token": "wrong"})
    clock.advance(29.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    assert [a["error"]["code"] for a in answers(transport)[1:]] == ["unauthenticated", "unauthenticated"]


def test_an_answer_after_the_client_left_arms_no_timer():
    clock, service, _, protocol, transport = connect(ApiLimits(idle_timeout=60))
    send(protocol, {"id": 1, "op": "hello", "client": "web-1", "token": WEB1_TOKEN})
    send(protocol, authorize_request(id=2, order_id="hold-1"))
    protocol.connectionLost()
    service.release("hold-1")
    assert clock.getDelayedCalls() == []
