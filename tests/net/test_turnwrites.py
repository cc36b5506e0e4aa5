"""A reactor turn's writes (`switch.net.turnwrites`), on real sockets on 127.0.0.1: they reach the peer in
order, straight from the socket without Twisted watching it for writing; what the kernel does not take goes
through Twisted, still in order; a connection closed in the turn it was written to still delivers; and a TLS
connection, never written into directly, gets its writes in order. `turnwrites.no_delay` turns Nagle's algorithm
off on TCP, under TLS too."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from switch.bank.tls import TlsClientOptions, client_connection_creator, server_tls_options
from switch.net import turnwrites
from switch.ops.devcerts import make_dev_pki
from tests.sockets import nagle_off


class Peer(protocol.Protocol):
    """The far end: keeps what it reads, and says when the connection ends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.ended: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(bytes(self.received))


async def connected() -> tuple[protocol.Protocol, Peer, Any]:
    """A connection on 127.0.0.1: (our side, the peer, the listening port)."""
    peer = Peer()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(lambda: peer))
    ours = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5).connect(
        protocol.Factory.forProtocol(protocol.Protocol))
    return ours, peer, port


async def until(check: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("not within the time allowed")


@pytest_twisted.ensureDeferred
async def test_a_turns_writes_go_into_the_socket_in_order_and_twisted_never_watches_it() -> None:
    ours, peer, port = await connected()
    watched = []
    original = ours.transport.startWriting
    ours.transport.startWriting = lambda: (watched.append(True), original())
    for chunk in (b"one ", b"two ", b"three"):
        turnwrites.write(ours.transport, chunk)
    assert peer.received == b""  # at the end of the turn, not before
    await until(lambda: peer.received == b"one two three")
    assert watched == [] and ours.transport not in reactor.getWriters()
    ours.transport.loseConnection()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_does_not_take_goes_through_twisted_and_later_writes_follow_it() -> None:
    ours, peer, port = await connected()
    peer.transport.pauseProducing()  # the peer reads nothing yet: the kernel's buffers fill
    big = bytes(range(256)) * 40_000  # 10 MB, far more than both sockets' buffers
    turnwrites.write(ours.transport, big)
    await deferLater(reactor, 0.05, lambda: None)
    assert ours.transport in reactor.getWriters()  # Twisted holds the rest and waits for room
    turnwrites.write(ours.transport, b"END")  # must come after all of it, not straight into the socket
    peer.transport.resumeProducing()
    await until(lambda: len(peer.received) == len(big) + 3, seconds=30)
    assert peer.received == big + b"END"
    ours.transport.loseConnection()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_connection_closed_by_a_timer_in_the_turn_it_was_written_to_delivers_first() -> None:
    ours, peer, port = await connected()

    def answer_and_close() -> None:  # as the socket API's line timeout does: an error line, then close
        turnwrites.write(ours.transport, b'{"error": "line_timeout"}\n')
        turnwrites.lose_connection(ours.transport)

    reactor.callLater(0, answer_and_close)
    assert await peer.ended == b'{"error": "line_timeout"}\n'
    await port.stopListening()


def test_a_transport_it_cannot_write_into_gets_its_write_at_once() -> None:
    transport = StringTransport()
    turnwrites.write(transport, b"at once")
    turnwrites.write(transport, b"")
    assert transport.value() == b"at once"
    turnwrites.lose_connection(transport)
    assert transport.disconnecting


TLS_KINDS = ["ssl endpoint (the API's tls: listener)", "wrapClientTLS (the bank links)"]


async def connected_tls(tmp_path: Any, kind: str) -> tuple[protocol.Protocol, Peer, Any]:
    """A mutually authenticated TLS connection on 127.0.0.1, of one of `TLS_KINDS`: (our side, the peer, the port)."""
    pki = make_dev_pki(tmp_path / "pki")
    peer = Peer()
    port = await SSL4ServerEndpoint(reactor, 0, server_tls_options(pki.server.cert, pki.server.key, pki.ca.cert),
                                    interface="127.0.0.1").listen(protocol.Factory.forProtocol(lambda: peer))
    creator = client_connection_creator(TlsClientOptions(pki.ca.cert, pki.client.cert, pki.client.key), "127.0.0.1")
    if kind.startswith("ssl"):
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, creator, timeout=5)
    else:
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5))
    return await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol)), peer, port


@pytest.mark.parametrize("tls", TLS_KINDS)
@pytest_twisted.ensureDeferred
async def test_a_tls_connection_is_written_by_twisted_in_order_and_closed_after_its_writes(tmp_path, tls: str) -> None:
    ours, peer, port = await connected_tls(tmp_path, tls)
    given = []
    original = ours.transport.write
    ours.transport.write = lambda data: (given.append(data), original(data))  # TLS itself joins a turn's writes
    for chunk in (b"one ", b"two ", b"three"):
        turnwrites.write(ours.transport, chunk)
    assert given == [b"one ", b"two ", b"three"]
    turnwrites.write(ours.transport, b" and closed")
    turnwrites.lose_connection(ours.transport)
    assert await peer.ended == b"one two three and closed"
    await port.stopListening()


@pytest.mark.parametrize("kind", ["tcp", *TLS_KINDS])
@pytest_twisted.ensureDeferred
async def test_no_delay_turns_nagle_off_on_tcp_and_under_tls(tmp_path, kind: str) -> None:
    ours, _, port = await (connected() if kind == "tcp" else connected_tls(tmp_path, kind))
    assert not nagle_off(ours.transport)  # Twisted leaves it on
    turnwrites.no_delay(ours.transport)
    assert nagle_off(ours.transport)
    ours.transport.loseConnection()
    await port.stopListening()


def test_no_delay_leaves_a_transport_without_tcp_alone() -> None:
    transport = StringTransport()
    turnwrites.no_delay(transport)
    turnwrites.write(transport, b"still written")
    assert transport.value() == b"still written"
