"""What a bank link is built from: its options and states, the channel its connector shares,
the thin wire protocol that reports to it, reconnect backoff and its metrics.

The decisions (when to connect, sign on, echo, give up) are all in `switch.bank.link.Link`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from OpenSSL import SSL
from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from switch.bank.tls import TlsClientOptions
from switch.iso.dialect import Dialect
from switch.iso.framing import Frame, FramedProtocol, Framing
from switch.net import turnwrites
from switch.observe.metrics import Counter, Gauge, MetricBundle


class LinkState(str, Enum):
    CONNECTING = "connecting"  # TCP connect and TLS handshake in progress
    SIGNING_ON = "signing_on"  # connected, waiting for the sign-on answer
    READY = "ready"  # carries traffic
    DOWN = "down"  # waiting to reconnect
    STOPPED = "stopped"  # not started, or stopped (signing off / closing included)


@dataclass(frozen=True)
class LinkOptions:
    """One connection to a bank host. Times in seconds; defaults:

    - ``tls``: required argument; ``None`` means plaintext TCP (logged as ``link_plaintext``).
    - ``connect_timeout`` 10.0: TCP connect plus TLS handshake.
    - ``reconnect_initial`` 0.5, ``reconnect_max`` 30.0, ``reconnect_factor`` 2.0,
      ``reconnect_jitter`` 0.2: see `Backoff`.
    - ``sign_on`` False: send a sign-on (0800/70=001, 1804/24=801) after connecting and
      carry traffic only once it is approved; ``sign_on_code`` None overrides the code.
    - ``sign_off_on_stop`` True: sign off (0800/70=002) before closing on stop.
    - ``echo_interval`` 30.0: send an echo test after this long without a message from
      the bank (0 disables); ``echo_timeout`` 10.0 bounds every network-management
      answer (echo, sign-on, sign-off); ``echo_max_failures`` 3 consecutive failed
      echoes drop and re-establish the link.
    """

    name: str
    host: str
    port: int
    tls: TlsClientOptions | None
    connect_timeout: float = 10.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    reconnect_factor: float = 2.0
    reconnect_jitter: float = 0.2
    sign_on: bool = False
    sign_on_code: str | None = None
    sign_off_on_stop: bool = True
    echo_interval: float = 30.0
    echo_timeout: float = 10.0
    echo_max_failures: int = 3

    def __post_init__(self) -> None:
        where = f"link {self.name!r}"
        if not 1 <= self.port <= 65535:
            raise ValueError(f"{where}: port must be 1..65535, got {self.port}")
        for name in ("connect_timeout", "reconnect_initial", "echo_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{where}: {name} must be positive, got {getattr(self, name)}")
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError(f"{where}: reconnect_max {self.reconnect_max} is below reconnect_initial {self.reconnect_initial}")
        if self.reconnect_factor < 1:
            raise ValueError(f"{where}: reconnect_factor must be at least 1, got {self.reconnect_factor}")
        if not 0 <= self.reconnect_jitter < 1:
            raise ValueError(f"{where}: reconnect_jitter must be in [0, 1), got {self.reconnect_jitter}")
        if self.echo_interval < 0:
            raise ValueError(f"{where}: echo_interval must be 0 (off) or positive, got {self.echo_interval}")
        if self.echo_max_failures < 1:
            raise ValueError(f"{where}: echo_max_failures must be at least 1, got {self.echo_max_failures}")
        if self.sign_on_code is not None and not (len(self.sign_on_code) == 3 and self.sign_on_code.isdigit()):
            raise ValueError(f"{where}: sign_on_code must be 3 digits, got {self.sign_on_code!r}")


@dataclass(frozen=True)
class Channel:
    """What every link of one connector shares: who it is and how it speaks."""

    connector: str
    dialect: Dialect
    framing: Framing
    tpdu: bytes | None = None


class LinkNotConnected(RuntimeError):
    """A write was attempted on a link without a connection; nothing was written."""


class LinkEvents(Protocol):
    """What a connection reports to the link that owns it (`switch.bank.link.Link`)."""

    name: str
    channel: Channel

    @property
    def tls(self) -> bool: ...

    def connection_started(self, protocol: LinkProtocol) -> None: ...

    def connection_made(self, protocol: LinkProtocol) -> None: ...

    def frame_received(self, protocol: LinkProtocol, frame: Frame) -> None: ...

    def connection_lost(self, protocol: LinkProtocol, reason: Failure) -> None: ...


class Backoff:
    """Delays between connection attempts: ``initial * factor**n`` capped at ``maximum``,
    each shortened by a random fraction up to ``jitter``.  Shortening (rather than
    spreading both ways) keeps the cap a cap, while links that dropped together
    (a bank restart) still spread their reconnects instead of arriving at once."""

    def __init__(self, initial: float, maximum: float, factor: float, jitter: float, rng: random.Random) -> None:
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rng = rng
        self._base = initial

    def next_delay(self) -> float:
        delay = self._base * (1 - self.jitter * self._rng.random())
        self._base = min(self.maximum, self._base * self.factor)
        return delay

    def reset(self) -> None:
        self._base = self.initial


class LinkMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        labels = ("connector", "link")
        self.messages = Counter(
            "kswitch_link_messages", "ISO 8583 messages on bank links by direction (in/out) and MTI",
            (*labels, "direction", "mti"), registry=registry,
        )
        self.up = Gauge("kswitch_link_up", "1 while the link is ready for traffic", labels, registry=registry)
        self.state = Gauge(
            "kswitch_link_state", "1 for the link's current state, 0 for the others", (*labels, "state"), registry=registry
        )
        self.reconnects = Counter("kswitch_link_reconnects", "Connection attempts after a failure or drop", labels, registry=registry)
        self.tls_failures = Counter(
            "kswitch_link_tls_failures", "Connections refused or closed by TLS (certificate, host name, protocol)",
            labels, registry=registry,
        )
        self.echo_failures = Counter("kswitch_link_echo_failures", "Echo tests unanswered or declined", labels, registry=registry)
        self.bad_frames = Counter(
            "kswitch_link_bad_frames", "Frames from the bank that did not decode as a message", labels, registry=registry
        )


@implementer(IHandshakeListener)
class LinkProtocol(FramedProtocol):
    """One connection of a link; reports everything to the link."""

    def __init__(self, link: LinkEvents) -> None:
        self.link = link
        self.framing = link.channel.framing
        self.peer_name = f"{link.channel.connector}/{link.name}"

    def connectionMade(self) -> None:
        super().connectionMade()
        turnwrites.no_delay(self.transport)  # a request must not wait for the bank's delayed acknowledgement
        if not self.link.tls:
            self.link.connection_made(self)

    def handshakeCompleted(self) -> None:
        self.link.connection_made(self)

    def frameReceived(self, frame: Frame) -> None:
        self.link.frame_received(self, frame)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.link.connection_lost(self, reason)


class LinkFactory(Factory):
    def __init__(self, link: LinkEvents) -> None:
        self.link = link

    def buildProtocol(self, addr: object) -> LinkProtocol:
        protocol = LinkProtocol(self.link)
        self.link.connection_started(protocol)
        return protocol


def tls_details(protocol: LinkProtocol) -> dict[str, str]:
    get_handle = getattr(protocol.transport, "getHandle", None)
    connection = get_handle() if get_handle is not None else None
    if not isinstance(connection, SSL.Connection):
        return {}
    return {"tls_version": connection.get_protocol_version_name(), "cipher": connection.get_cipher_name() or ""}
