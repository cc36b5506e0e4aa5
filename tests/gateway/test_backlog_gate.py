"""Admission by the journal's backlog (`switch.gateway.flow`): a connection stops reading between two
request lines while the journal has too many writes waiting, and reads on, in order, once it drained."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from switch.gateway.config import ApiLimits
from switch.gateway.flow import BacklogGate
from switch.gateway.protocol import ApiFactory

from .conftest import WEB1_TOKEN, FakePaymentService, authorize_request, make_config


class Backlog:
    """The journal's queue as the gate sees it: each authorization the service takes adds a write."""

    def __init__(self, service: FakePaymentService) -> None:
        self.service = service
        self.written = 0

    def __call__(self) -> int:
        return len(self.service.calls) - self.written


def connect(gate_high: int = 3, gate_low: int = 1, limits: ApiLimits | None = None, clock: Clock | None = None):
    clock, service = clock or Clock(), FakePaymentService()
    factory = ApiFactory(service, make_config(limits), clock, registry=CollectorRegistry())
    backlog = Backlog(service)
    factory.use_gate(BacklogGate(backlog, high=gate_high, low=gate_low))
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.2.3", 40000))
    protocol.makeConnection(transport)
    protocol.dataReceived(json.dumps({"id": 0, "op": "hello", "client": "web-1", "token": WEB1_TOKEN}).encode() + b"\n")
    return clock, service, backlog, factory.gate, protocol, transport


def lines(*requests: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in requests)


def held(protocol) -> float | None:
    """The gauge operators see on /metrics."""
    return protocol.factory.metrics.registry.get_sample_value("kswitch_api_connections_held")


def answered_ids(transport: StringTransport) -> list[int]:
    return [json.loads(line)["id"] for line in transport.value().splitlines()]


def test_a_burst_is_read_only_as_far_as_the_journal_keeps_up_and_then_in_order():
    clock, service, backlog, gate, protocol, transport = connect(gate_high=3, gate_low=1)
    protocol.dataReceived(lines(*(authorize_request(id=n, order_id=f"o-{n}") for n in range(1, 9))))
    assert [request.order_id for request, _ in service.calls] == ["o-1", "o-2", "o-3"]
    assert transport.producerState == "paused" and gate.holding == 1
    assert held(protocol) == 1
    assert answered_ids(transport) == [0, 1, 2, 3]

    backlog.written = 1  # a batch committed, but 2 still wait: above low
    gate.drained()
    assert len(service.calls) == 3 and transport.producerState == "paused"

    backlog.written = 2
    gate.drained()  # down to low: reads the lines it holds until the journal is behind again
    assert [request.order_id for request, _ in service.calls] == [f"o-{n}" for n in range(1, 6)]
    assert transport.producerState == "paused"

    backlog.written = 5
    gate.drained()
    assert [request.order_id for request, _ in service.calls] == [f"o-{n}" for n in range(1, 9)]
    assert transport.producerState == "producing" and gate.holding == 0
    assert held(protocol) == 0
    assert answered_ids(transport) == list(range(0, 9))


class ReadingClock(Clock):
    """A new float on each reading, as the real reactor's clock gives (`Clock` hands out the same one)."""

    def seconds(self) -> float:
        return self.rightNow + 0.0


def test_the_requests_of_one_read_are_timed_from_it_and_share_its_time():
    """Memory per pending payment: the lines of one read keep one start time between them, not a float each;
    lines the gate held are timed from the read that took them up."""
    clock, service, backlog, gate, protocol, transport = connect(gate_high=3, gate_low=1, clock=ReadingClock())
    clock.advance(7)
    protocol.dataReceived(lines(*(authorize_request(id=n, order_id=f"hold-{n}") for n in range(1, 5))))
    first, second, third = (service.held[f"hold-{n}"][0] for n in range(1, 4))
    assert first.started == 7 and first.started is second.started is third.started
    clock.advance(2)
    backlog.written = 3
    gate.drained()
    assert service.held["hold-4"][0].started == 9
    clock.advance(1)
    for n in range(1, 5):
        service.release(f"hold-{n}")
    duration = protocol.factory.metrics.registry.get_sample_value
    assert duration("kswitch_api_request_duration_seconds_sum", {"op": "authorize"}) == 3 * 3 + 1


def test_a_line_cut_by_the_read_waits_with_the_held_ones_and_completes_later():
    _, service, backlog, gate, protocol, transport = connect(gate_high=1, gate_low=0)
    data = lines(authorize_request(id=1, order_id="a"), authorize_request(id=2, order_id="b"))
    protocol.dataReceived(data + b'{"id": 3, "op": "pi')
    assert [r.order_id for r, _ in service.calls] == ["a"]
    protocol.dataReceived(b'ng"}\n')  # arrives while held: kept, not read
    assert answered_ids(transport) == [0, 1]
    backlog.written = 1
    gate.drained()
    assert [r.order_id for r, _ in service.calls] == ["a", "b"]
    backlog.written = 2
    gate.drained()
    assert answered_ids(transport) == [0, 1, 2, 3]


def test_a_held_connection_is_not_closed_for_a_slow_line():
    clock, service, backlog, gate, protocol, transport = connect(gate_high=1, gate_low=0,
                                                                 limits=ApiLimits(line_timeout=5))
    protocol.dataReceived(lines(authorize_request(id=1, order_id="a"), authorize_request(id=2, order_id="b")))
    clock.advance(60)  # the journal is a minute behind: the held line is the switch's delay, not the client's
    assert not transport.disconnecting
    backlog.written = 1
    gate.drained()
    assert answered_ids(transport) == [0, 1, 2]


def test_a_client_that_stops_reading_answers_stays_paused_when_the_gate_opens():
    _, service, backlog, gate, protocol, transport = connect(gate_high=1, gate_low=0)
    protocol.dataReceived(lines(authorize_request(id=1, order_id="a"), authorize_request(id=2, order_id="b")))
    protocol.pauseProducing()  # the transport's own back-pressure: the client reads no answers
    backlog.written = 1
    gate.drained()
    assert len(service.calls) == 2 and transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"


def test_a_connection_lost_while_held_is_dropped_by_the_gate():
    _, service, backlog, gate, protocol, transport = connect(gate_high=1, gate_low=0)
    protocol.dataReceived(lines(authorize_request(id=1, order_id="a"), authorize_request(id=2, order_id="b")))
    protocol.connectionLost(None)
    backlog.written = 1
    gate.drained()
    assert len(service.calls) == 1 and gate.holding == 0


def test_the_gate_needs_low_below_high():
    with pytest.raises(ValueError, match="low < high"):
        BacklogGate(lambda: 0, high=4, low=4)


class Counted:
    """A connection the gate holds: counts its holds and releases."""

    def __init__(self) -> None:
        self.held = self.released = 0

    def hold(self) -> None:
        self.held += 1

    def release(self) -> None:
        self.released += 1


def test_the_journals_gate_closes_at_half_a_batch_waiting_and_opens_at_a_quarter():
    waiting = 0
    gate = BacklogGate.for_batches(lambda: waiting, max_batch=256)
    opened = []
    for waiting in range(122, 132):
        opened.append(not gate.closed())
    assert opened == [True] * 6 + [False] * 4  # closed from 128 writes waiting
    connection = Counted()
    gate.hold(connection)
    waiting = 65
    gate.drained()
    assert (connection.held, connection.released) == (1, 0)
    waiting = 64
    gate.drained()
    assert (connection.held, connection.released) == (1, 1)
    smallest = BacklogGate.for_batches(lambda: 0, max_batch=1)
    assert (smallest.high, smallest.low) == (1, 0)
