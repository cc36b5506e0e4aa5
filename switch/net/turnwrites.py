"""A reactor turn's writes to a socket, sent together at the turn's end, straight into the socket.

Why: Twisted queues each ``transport.write``, registers the socket with epoll for writing
(``epoll_ctl``), sends on the reactor's next turn once epoll says the socket is writable, and
unregisters it (``epoll_ctl`` again). In the open loop, where a turn holds one or two payments, that was
four ``epoll_ctl`` calls a payment (its answer to the web tier, its request to the bank) and two more
dispatches of the reactor, and each write waited for the next poll. Here the writes of one turn to one
socket wait in a list, and when the turn's events are handled (a ``callLater(0)`` shared by every socket)
they go into the socket in one ``send``; only what the kernel does not take goes to Twisted, which then
watches the socket as before. A busy turn still sends each socket's writes together, as Twisted did.

What stays as Twisted has it: the order of a socket's writes (once Twisted holds some of a socket's data,
everything after it goes to Twisted too); back-pressure (a streaming producer registered on the transport
is paused when Twisted's buffer fills, as before); a connection closed in the turn it was written to
(its writes reach Twisted first: close it with `lose_connection`, since a turn's writes made by a timer
would otherwise reach it only after Twisted had closed the socket); an aborted one drops what waits.

Any other transport gets ``transport.write`` at once: a TLS connection (Twisted's `BufferingTLSTransport`
already joins a turn's small writes into one TLS record), a Unix socket, a test's ``StringTransport``.

Beside it, `no_delay`: since a turn's writes are already joined here, Nagle's algorithm has nothing left to
join on the switch's sockets, only acknowledgements to wait for; every TCP endpoint turns it off through it.
"""

from __future__ import annotations

import weakref
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport

_DIRECT = (tcp.Server, tcp.Client)
"""Transports whose socket this sends on itself: plain TCP, these exact types (a subclass may write otherwise:
a Unix socket passes descriptors, an ``ssl:`` connection encrypts)."""


class _Turn:
    """The writes of one reactor's current turn."""

    __slots__ = ("_reactor", "_waiting", "_scheduled", "__weakref__")

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._waiting: dict[Any, list[bytes]] = {}
        self._scheduled = False

    def add(self, transport: Any, data: bytes) -> None:
        chunks = self._waiting.get(transport)
        if chunks is not None:
            chunks.append(data)
            return
        self._waiting[transport] = [data]
        if not self._scheduled:
            self._scheduled = True
            self._reactor.callLater(0, self.send)

    def send(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, {}
        for transport, chunks in waiting.items():
            _send(transport, b"".join(chunks))  # one chunk is returned as it is, not copied

    def send_now(self, transport: Any) -> None:
        chunks = self._waiting.pop(transport, None)
        if chunks:
            _send(transport, b"".join(chunks))


def _reactor(transport: Any) -> Any:
    """The reactor whose turn ``transport``'s writes wait for, or None when this does not write into it."""
    return transport.reactor if type(transport) in _DIRECT and not transport.TLS else None


_turns: weakref.WeakKeyDictionary[Any, _Turn] = weakref.WeakKeyDictionary()


def write(transport: ITransport, data: bytes) -> None:
    """``transport.write(data)``, sent at the end of this reactor turn with the turn's other writes to it."""
    if not data:
        return
    reactor = _reactor(transport)
    if reactor is None:
        transport.write(data)
        return
    turn = _turns.get(reactor)
    if turn is None:
        turn = _turns[reactor] = _Turn(reactor)
    turn.add(transport, data)


def lose_connection(transport: ITransport) -> None:
    """``transport.loseConnection()`` after what this turn wrote to it: Twisted sends it, then closes."""
    reactor = _reactor(transport)
    turn = _turns.get(reactor) if reactor is not None else None
    if turn is not None:
        turn.send_now(transport)
    transport.loseConnection()


def no_delay(transport: ITransport) -> None:
    """Turn Nagle's algorithm off on ``transport``'s TCP socket (TLS over TCP too; nothing for other kinds).

    Why: a turn's writes to a socket already go out in one ``send``, so Nagle has nothing left to join. What it
    still does is hold a small write while the peer has not acknowledged the previous one, and a peer that sends
    nothing back (a web tier waiting on a burst of its payments, a bank between requests) delays that
    acknowledgement for Linux's 40 ms. Measured on the socket API, bursts of 16 authorizations on one connection:
    some answers were held 41-42 ms with Nagle on, none more than 10 ms with it off (`bench/burst.py`)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


def _send(transport: Any, data: bytes) -> None:
    # Twisted's own write once it holds any of this socket's data, or the connection is closing or gone: the
    # order is kept, and a close or an abort does with the data what it does with Twisted's.
    if transport.connected and not transport.disconnecting and not transport.dataBuffer and not transport._tempDataLen:
        try:
            sent = transport.socket.send(data)
        except OSError:  # full (EAGAIN) or failing: Twisted's write and its next doWrite handle both
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
