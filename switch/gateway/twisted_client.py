"""The Twisted client for the kswitch socket API; import it as ``switch.gateway.client.KSwitchClient``.

Requests are pipelined over one connection and matched to answers by id, so one
slow authorization does not hold up the others. After a successful hello the
client pings at half the ``idle_timeout`` the switch announces, so a quiet
connection is not closed as idle.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from switch.gateway.clientcore import (
    DEFAULT_CONNECT,
    MAX_ANSWER_BYTES,
    Answer,
    KSwitchConnectionError,
    KSwitchError,
    Operations,
    answer_fields,
    connection_error,
    decode_answer,
    encode_request,
    parse_connect,
)
from switch.net import turnwrites


class KSwitchProtocol(LineOnlyReceiver):
    """Matches answers to requests by id; many requests may be outstanding at once."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_ANSWER_BYTES

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, Deferred[Answer]] = {}
        self._connection_error: KSwitchError | None = None
        self.connected_deferred: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        turnwrites.no_delay(self.transport)  # a pipelined request must not wait for the switch's delayed ACK

    def send(self, op: str, fields: dict[str, Any]) -> Deferred[Answer]:
        if self._connection_error is not None or not self.connected:
            raise self._connection_error or KSwitchConnectionError("connection_lost", "not connected")
        request_id = next(self._ids)
        answered: Deferred[Answer] = Deferred(lambda _: self._forget(request_id))
        self._pending[request_id] = answered
        self.transport.write(encode_request(request_id, op, fields))
        return answered

    def _forget(self, request_id: int) -> None:
        self._pending.pop(request_id, None)

    def lineReceived(self, line: bytes) -> None:
        try:
            answer = decode_answer(line)
        except KSwitchError as e:
            self._connection_error = e
            self.transport.loseConnection()
            return
        request_id = answer.get("id")
        answered = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if answered is not None:
            answered.callback(answer)
        else:
            self._connection_error = connection_error(answer) or self._connection_error

    def lineLengthExceeded(self, line: bytes) -> None:
        self._connection_error = KSwitchConnectionError("protocol_error", "the switch sent an over-long line")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        closed = KSwitchConnectionError("connection_lost", "the connection to the switch closed")
        error = self._connection_error or closed
        self._connection_error = error
        pending, self._pending = self._pending, {}
        for answered in pending.values():
            answered.errback(error)
        self.lost.callback(None)


class KSwitchClient(Operations[Deferred[Answer]]):
    """Twisted client over one connection; methods return Deferreds firing with the answer fields."""

    def __init__(self, protocol: KSwitchProtocol, reactor: IReactorTime | None = None, timeout: float | None = None):
        self.protocol = protocol
        self._reactor = reactor
        self._timeout = timeout
        self._keepalive: LoopingCall | None = None

    @classmethod
    def connect(
        cls,
        reactor: Any,
        description: str = DEFAULT_CONNECT,
        client: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> Deferred[KSwitchClient]:
        """Connect to a Twisted client endpoint description (``tcp:host=…:port=…``, ``unix:path=…``,
        or the short ``tcp:HOST:PORT``), and say hello when ``client`` and ``token`` are given."""
        endpoint = clientFromString(reactor, _twisted_description(description))
        connected = connectProtocol(endpoint, KSwitchProtocol())

        def made(protocol: KSwitchProtocol) -> Deferred[KSwitchClient] | KSwitchClient:
            kswitch = cls(protocol, reactor, timeout)
            if client is None or token is None:
                return kswitch
            return kswitch.hello(client, token).addCallbacks(lambda _: kswitch, refused, errbackArgs=(protocol,))

        def refused(reason: Failure, protocol: KSwitchProtocol) -> Failure:
            protocol.transport.loseConnection()
            return reason

        def unreachable(reason: Failure) -> Failure:
            if reason.check(KSwitchError):
                return reason
            message = f"cannot connect to {description}: {reason.getErrorMessage()}"
            raise KSwitchConnectionError("connect_failed", message)

        return connected.addCallback(made).addErrback(unreachable)

    def hello(self, client: str, token: str) -> Deferred[Answer]:
        """Authenticate; then keep the connection from being closed as idle (needs ``reactor``)."""
        return super().hello(client, token).addCallback(self._keep_alive)

    def _keep_alive(self, answer: Answer) -> Answer:
        idle = answer.get("idle_timeout")
        if self._reactor is None or self._keepalive is not None or isinstance(idle, bool):
            return answer
        if isinstance(idle, int | float) and idle > 0:
            self._keepalive = LoopingCall(self._ping)
            self._keepalive.clock = self._reactor
            self._keepalive.start(idle / 2, now=False)
            self.protocol.lost.addBoth(self._stop_keep_alive)
        return answer

    def _ping(self) -> None:
        # A broken connection shows on the caller's next request; the keep-alive has nobody to tell.
        self.ping().addErrback(lambda _: None)

    def _stop_keep_alive(self, result: object) -> object:
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        return result

    def call(self, op: str, **fields: Any) -> Deferred[Answer]:
        """Send any op; fires with the answer fields or fails with `KSwitchError`."""
        try:
            answered = self.protocol.send(op, fields)
        except KSwitchError as e:
            return fail(e)
        if self._timeout is not None and self._reactor is not None:
            answered.addTimeout(self._timeout, self._reactor)
            answered.addErrback(_timed_out, op)
        return answered.addCallback(answer_fields)

    def close(self) -> Deferred[None]:
        """Close the connection; fires once it is closed."""
        self.protocol.transport.loseConnection()
        return self.protocol.lost


def _timed_out(reason: Failure, op: str) -> Failure:
    reason.trap(DeferredTimeout)
    raise KSwitchConnectionError("timeout", f"no answer to {op} in time; the outcome is unknown")


def _twisted_description(description: str) -> str:
    """Accept the short ``tcp:HOST:PORT`` / ``unix:PATH`` forms kpay uses as well as Twisted's own."""
    if "=" in description:
        return description
    target = parse_connect(description)
    if isinstance(target, str):
        return "unix:path=" + target.replace("\\", "\\\\").replace(":", "\\:")
    host, port = target
    return "tcp:host=" + host.replace(":", "\\:") + f":port={port}"
