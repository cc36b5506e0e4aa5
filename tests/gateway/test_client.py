"""The client library against a real server: the Twisted client pipelined, the blocking one in a thread."""

from __future__ import annotations

import json
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from switch.gateway.client import (
    BlockingClient,
    KSwitchClient,
    KSwitchConnectionError,
    KSwitchError,
    parse_connect,
)
from switch.gateway.config import ApiLimits
from tests.sockets import nagle_off

from .conftest import PAN, WEB1_TOKEN

inline = pytest_twisted.inlineCallbacks
SALE = dict(merchant_id="m1", store_id="s1", amount=1250, currency="USD", pan=PAN, expiry="2812", cvv="123")


@pytest.fixture
def closed_port():
    """A port bound but not listening, so connecting is refused and nobody else can take it meanwhile."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@inline
def test_twisted_client_pipelines_and_matches_answers(server):
    client = yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{server.port}", "web-1", WEB1_TOKEN)
    assert nagle_off(client.protocol.transport)  # pipelined requests never wait for the switch's late ACK
    slow = client.authorize(order_id="hold-slow", **SALE)
    quick = client.authorize(order_id="quick", **SALE)
    pong = yield client.ping()
    assert pong == {"pong": True}
    answer = yield quick
    assert (answer["status"], answer["order_id"], answer["masked_pan"]) == ("approved", "quick", "411111******1111")
    assert not slow.called
    server.service.release("hold-slow")
    answer = yield slow
    assert answer["order_id"] == "hold-slow"
    status = yield client.status(answer["txn_id"])
    assert status["order_id"] == "hold-slow"
    yield client.close()


@inline
def test_twisted_client_raises_error_answers_with_code_and_field(server):
    client = yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{server.port}", "web-1", WEB1_TOKEN)
    with pytest.raises(KSwitchError) as refused:
        yield client.authorize(order_id="o", **{**SALE, "pan": "4111111111111112"})
    assert (refused.value.code, refused.value.field) == ("invalid_request", "instrument.pan")
    with pytest.raises(KSwitchError) as unknown:
        yield client.call("refund", txn_id="T1")
    assert unknown.value.code == "unknown_op"
    yield client.close()


@inline
def test_twisted_client_reports_refused_hello_and_unreachable_switch(server, closed_port):
    with pytest.raises(KSwitchError) as refused:
        yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{server.port}", "web-1", "wrong")
    assert refused.value.code == "unauthenticated"
    with pytest.raises(KSwitchConnectionError) as unreachable:
        yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{closed_port}")
    assert unreachable.value.code == "connect_failed"


@inline
def test_twisted_client_fails_pending_calls_when_the_connection_drops(server):
    client = yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{server.port}", "web-1", WEB1_TOKEN)
    pending = client.authorize(order_id="hold-drop", **SALE)
    yield client.ping()
    for connection in list(server.factory.connections):
        connection.transport.loseConnection()
    with pytest.raises(KSwitchConnectionError) as lost:
        yield pending
    assert lost.value.code == "connection_lost"
    with pytest.raises(KSwitchConnectionError):
        yield client.ping()


@inline
def test_twisted_client_timeout(server):
    client = yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{server.port}", "web-1", WEB1_TOKEN, timeout=0.2)
    with pytest.raises(KSwitchConnectionError) as late:
        yield client.authorize(order_id="hold-late", **SALE)
    assert late.value.code == "timeout"
    server.service.release("hold-late")
    pong = yield client.ping()
    assert pong == {"pong": True}
    yield client.close()


def blocking(function):
    return deferToThread(function)


@inline
def test_blocking_client_says_hello_and_authorizes(server):
    def scenario():
        with BlockingClient("127.0.0.1", server.port, client="web-1", token=WEB1_TOKEN, timeout=5) as client:
            sale = client.authorize(order_id="b-1", capture=False, idempotency_key="k-1", **SALE)
            return sale, client.status(sale["txn_id"]), client.ping()

    sale, status, pong = yield blocking(scenario)
    assert (sale["status"], sale["masked_pan"]) == ("approved", "411111******1111")
    assert status["txn_id"] == sale["txn_id"]
    assert pong == {"pong": True}
    [(request, _)] = server.service.calls
    assert (request.capture, request.idempotency_key) == (False, "k-1")


@inline
def test_blocking_client_errors(server, closed_port):
    def scenario():
        failures = []
        with BlockingClient("127.0.0.1", server.port, client="web-1", token=WEB1_TOKEN, timeout=5) as client:
            try:
                client.authorize(order_id="b", **{**SALE, "currency": "XYZ"})
            except KSwitchError as e:
                failures.append((e.code, e.field))
            failures.append(client.ping())
        with BlockingClient("127.0.0.1", server.port, client="web-1", token="wrong", timeout=5) as client:
            try:
                client.ping()
            except KSwitchError as e:
                failures.append((e.code, e.field))
        try:
            BlockingClient("127.0.0.1", closed_port, timeout=5).ping()
        except KSwitchConnectionError as e:
            failures.append((e.code, None))
        return failures

    failures = yield blocking(scenario)
    assert failures == [
        ("invalid_request", "currency"),
        {"pong": True},
        ("unauthenticated", None),
        ("connect_failed", None),
    ]


@inline
def test_blocking_client_timeout_then_reconnects(server):
    def scenario():
        with BlockingClient("127.0.0.1", server.port, client="web-1", token=WEB1_TOKEN, timeout=0.3) as client:
            try:
                client.authorize(order_id="hold-blocking", **SALE)
            except KSwitchConnectionError as e:
                code = e.code
            return code, client.ping()

    code, pong = yield blocking(scenario)
    assert (code, pong) == ("timeout", {"pong": True})
    assert len(server.factory.connections) <= 1


@inline
def test_blocking_client_over_a_unix_socket(make_server, tmp_path):
    path = str(tmp_path / "api.sock")
    make_server(descriptions=(f"unix:{path}",))

    def scenario():
        with BlockingClient.from_description(f"unix:{path}", client="web-1", token=WEB1_TOKEN) as client:
            return client.authorize(order_id="u-1", **SALE)

    sale = yield blocking(scenario)
    assert sale["status"] == "approved"


def test_connect_descriptions():
    assert parse_connect("tcp:127.0.0.1:7583") == ("127.0.0.1", 7583)
    assert parse_connect("tcp:[::1]:7583") == ("::1", 7583)
    assert parse_connect("unix:/run/kswitch/api.sock") == "/run/kswitch/api.sock"
    for wrong in ("tcp:7583", "tcp:host:0", "udp:1.2.3.4:5", "unix:", "127.0.0.1:7583"):
        with pytest.raises(ValueError):
            parse_connect(wrong)
    with pytest.raises(ValueError):
        BlockingClient("127.0.0.1")


class ScriptedSwitch(Protocol):
    """Answers every request after first pushing a line that is no answer of the client's."""

    def dataReceived(self, data: bytes) -> None:
        for line in data.splitlines():
            request = json.loads(line)
            self.transport.write(b'{"event":"reserved-for-later","txn_id":"T1"}\n{"id":999,"ok":true}\n')
            self.transport.write(json.dumps({"id": request["id"], "ok": True, "pong": True}).encode() + b"\n")


@inline
def test_clients_ignore_lines_that_answer_nothing_they_sent():
    port = reactor.listenTCP(0, Factory.forProtocol(ScriptedSwitch), interface="127.0.0.1")
    number = port.getHost().port
    try:
        def scenario():
            with BlockingClient("127.0.0.1", number, timeout=5) as client:
                return client.ping()

        pong = yield blocking(scenario)
        assert pong == {"pong": True}
        client = yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{number}")
        pong = yield client.ping()
        assert pong == {"pong": True}
        yield client.close()
    finally:
        yield port.stopListening()


class TooLargeSwitch(Protocol):
    def dataReceived(self, data: bytes) -> None:
        error = {"code": "too_large", "field": None, "message": "a line may hold at most 10 bytes"}
        self.transport.write(json.dumps({"id": None, "ok": False, "error": error}).encode() + b"\n")
        self.transport.loseConnection()


@inline
def test_clients_report_connection_errors_with_the_switch_code():
    port = reactor.listenTCP(0, Factory.forProtocol(TooLargeSwitch), interface="127.0.0.1")
    number = port.getHost().port
    try:
        with pytest.raises(KSwitchError) as blocking_error:
            yield blocking(lambda: BlockingClient("127.0.0.1", number, timeout=5).ping())
        assert blocking_error.value.code == "too_large"
        client = yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{number}")
        with pytest.raises(KSwitchError) as twisted_error:
            yield client.ping()
        assert twisted_error.value.code == "too_large"
    finally:
        yield port.stopListening()


def test_twisted_client_pings_at_half_the_idle_timeout_the_switch_announces():
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from switch.gateway.twisted_client import KSwitchProtocol

    clock, transport, protocol = Clock(), StringTransport(), KSwitchProtocol()
    protocol.makeConnection(transport)
    client = KSwitchClient(protocol, clock)
    client.hello("web-1", WEB1_TOKEN)
    protocol.dataReceived(b'{"id": 1, "ok": true, "client": "web-1", "idle_timeout": 60.0}\n')
    sent = lambda: [json.loads(line)["op"] for line in transport.value().splitlines()]  # noqa: E731
    clock.advance(29)
    assert sent() == ["hello"]
    clock.advance(1)
    assert sent() == ["hello", "ping"]
    clock.advance(30)
    assert sent() == ["hello", "ping", "ping"]
    protocol.connectionLost()
    clock.advance(600)
    assert sent() == ["hello", "ping", "ping"] and clock.getDelayedCalls() == []


@inline
def test_twisted_client_keeps_a_quiet_connection_open(make_server):
    from tests.e2e.harness import eventually

    server = make_server(limits=ApiLimits(idle_timeout=0.2))
    client = yield KSwitchClient.connect(reactor, f"tcp:127.0.0.1:{server.port}", "web-1", WEB1_TOKEN)
    pings = lambda: server.metric("kswitch_api_requests_total", op="ping", status="ok") or 0  # noqa: E731
    yield ensureDeferred(eventually(lambda: pings() >= 5))  # well past the idle timeout
    answer = yield client.status("T000404").addErrback(lambda f: f.value)
    assert isinstance(answer, KSwitchError) and answer.code == "not_found"
    yield client.close()


@inline
def test_blocking_client_reconnects_instead_of_using_a_connection_closed_as_idle(make_server):
    from tests.e2e.harness import eventually

    server = make_server(limits=ApiLimits(idle_timeout=0.2))
    client = BlockingClient("127.0.0.1", server.port, client="web-1", token=WEB1_TOKEN, timeout=5)
    yield blocking(client.ping)
    yield ensureDeferred(eventually(lambda: not server.factory.connections))  # closed as idle
    pong = yield blocking(client.ping)
    assert pong == {"pong": True}
    yield blocking(client.close)
