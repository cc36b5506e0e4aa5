"""Where time matters, a `Clock` stands in for the reactor: hello timeout and request durations."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from switch.api import ApiFactory, ApiLimits

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
