"""A tiny ISO 8583 host for link tests: real sockets on 127.0.0.1, scripted answers.

It approves every request by default; a test replaces ``handler`` to delay, drop,
decline or answer with something odd.  Not a simulator of any bank (that is
`switch.tools.banksim`), just enough of a peer to exercise the link layer over the wire.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater

from switch.iso.dialect import Dialect, Message
from switch.iso.framing import Frame, FramedProtocol, Framing, swap_tpdu
from switch.iso.mti import approved_code, is_network, is_request, network_response, response_mti

Handler = Callable[[Message, "HostProtocol"], "Message | None"]


class HostProtocol(FramedProtocol):
    def __init__(self, host: IsoHost) -> None:
        self.host = host
        self.framing = host.framing
        self.peer_name = "test-host"
        self.tpdu: bytes | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.host.connections.append(self)
        self.host.accepted += 1

    def frameReceived(self, frame: Frame) -> None:
        if not frame.payload:
            return
        self.tpdu = frame.tpdu
        message = self.host.dialect.decode(frame.payload)
        self.host.received.append(message)
        if not is_request(message["t"]):
            self.host.responses.append(message)
            return
        answer = self.host.handler(message, self)
        if answer is not None:
            self.send(answer)

    def send(self, message: Message) -> None:
        self.sendRaw(self.host.dialect.encode(message))

    def sendRaw(self, payload: bytes) -> None:
        tpdu = swap_tpdu(self.tpdu) if self.tpdu else (b"\x60\x00\x00\x00\x01" if self.framing.tpdu else None)
        self.sendFrame(payload, tpdu)

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        if self in self.host.connections:
            self.host.connections.remove(self)


class HostFactory(Factory):
    def __init__(self, host: IsoHost) -> None:
        self.host = host

    def buildProtocol(self, addr: object) -> HostProtocol:
        return HostProtocol(self.host)


def approve(host: IsoHost, message: Message) -> Message:
    if is_network(message["t"]):
        return network_response(message, host.dialect.version)
    answer = {k: v for k, v in message.items() if k not in ("2", "14", "35", "52")}
    answer["t"] = response_mti(message["t"])
    answer["39"] = approved_code(host.dialect.version)
    return answer


class IsoHost:
    def __init__(self, dialect: Dialect, framing: Framing, tls: object | None = None) -> None:
        self.dialect = dialect
        self.framing = framing
        self.tls = tls
        self.handler: Handler = lambda message, protocol: approve(self, message)
        self.connections: list[HostProtocol] = []
        self.received: list[Message] = []
        self.responses: list[Message] = []
        self.accepted = 0
        self.port = 0
        self._listener = None

    def listen(self, port: int = 0) -> int:
        factory = HostFactory(self)
        if self.tls is None:
            self._listener = reactor.listenTCP(port, factory, interface="127.0.0.1")
        else:
            self._listener = reactor.listenSSL(port, factory, self.tls, interface="127.0.0.1")
        self.port = self._listener.getHost().port
        return self.port

    def requests(self, mti: str | None = None) -> list[Message]:
        return [m for m in self.received if is_request(m["t"]) and (mti is None or m["t"] == mti)]

    def drop_connections(self) -> None:
        for protocol in list(self.connections):
            protocol.transport.abortConnection()

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stopListening()
            self._listener = None
        self.drop_connections()
        await sleep(0.01)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def eventually(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll the real reactor until ``predicate()`` is true."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await sleep(0.01)
        waited += 0.01
