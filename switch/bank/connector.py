"""A connector: everything the switch needs to talk to one bank.

It ties the bank's dialect and framing to its links, the pool that chooses among them
and the mux that pairs responses with requests, and is the one object the gateway
holds per bank: ``Connector(options).start()``, ``request(message)``, ``stop()``.
The option dataclasses for all three layers are importable from here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Mapping

import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime

from switch.bank.link import Link, StateObserver
from switch.bank.linkparts import Channel, LinkOptions, LinkState
from switch.bank.matching import DEFAULT_MATCH_KEYS, MatchKeys
from switch.bank.mux import (
    LateResponseHook,
    LinkLost,
    Mux,
    MuxBusy,
    MuxError,
    NoLinkAvailable,
    RequestTimeout,
)
from switch.bank.numbering import StanAllocator, stan_start
from switch.bank.pool import STRATEGIES, LinkPool
from switch.bank.tls import TlsClientOptions
from switch.domain.answering import Answerable
from switch.iso.dialect import Dialect, Message
from switch.iso.framing import TPDU_LENGTH, Framing
from switch.iso.masking import mask_message

__all__ = [
    "Connector", "ConnectorOptions", "LinkOptions", "TlsClientOptions", "LinkState", "InboundRequestHook",
    "MuxError", "NoLinkAvailable", "MuxBusy", "RequestTimeout", "LinkLost",
]

InboundRequestHook = Callable[[Message], "Deferred[Message | None] | Message | None"]


@dataclass(frozen=True)
class ConnectorOptions:
    """One bank. Defaults:

    - ``tpdu``: required argument; the 5-byte TPDU sent with our requests when the
      framing carries one (``None`` otherwise).
    - ``pool_strategy`` "primary-secondary" (or "round-robin").
    - ``request_timeout`` 30.0 seconds, overridable per request.
    - ``max_in_flight`` 1000 requests awaiting answers before `MuxBusy`.
    - ``match_keys`` ``{"default": ("mti", "41", "11")}``, plus optional per-MTI entries.
    - ``late_response_window`` 120.0 seconds during which an answer to a request that
      timed out or lost its link is recognised as late (and its STAN stays reserved).
    """

    name: str
    dialect: Dialect
    framing: Framing
    tpdu: bytes | None
    links: tuple[LinkOptions, ...]
    pool_strategy: str = "primary-secondary"
    request_timeout: float = 30.0
    max_in_flight: int = 1000
    match_keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_MATCH_KEYS))
    late_response_window: float = 120.0

    def __post_init__(self) -> None:
        where = f"connector {self.name!r}"
        if not self.links:
            raise ValueError(f"{where}: needs at least one link")
        names = [link.name for link in self.links]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: link names must be unique, got {names}")
        if self.pool_strategy not in STRATEGIES:
            raise ValueError(f"{where}: pool_strategy {self.pool_strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.framing.tpdu and (self.tpdu is None or len(self.tpdu) != TPDU_LENGTH):
            raise ValueError(f"{where}: framing carries a TPDU; tpdu must be {TPDU_LENGTH} bytes, got {self.tpdu!r}")
        if not self.framing.tpdu and self.tpdu is not None:
            raise ValueError(f"{where}: tpdu is set but the framing carries none")
        if self.request_timeout <= 0 or self.late_response_window < 0:
            raise ValueError(f"{where}: request_timeout must be positive and late_response_window not negative")
        if self.max_in_flight < 1:
            raise ValueError(f"{where}: max_in_flight must be at least 1, got {self.max_in_flight}")
        MatchKeys(self.match_keys)


class Connector:
    """The links, pool and mux of one bank, started and stopped together.

    Hooks (plain attributes, replaceable): ``on_inbound_request(message)`` answers a
    bank-initiated request or advice other than echo/sign-on/sign-off (return the
    response, a Deferred of it, or None to answer nothing; default: log and answer
    nothing); ``on_late_response(message)`` sees answers that came after their request
    gave up (default: none; they are logged and counted regardless);
    ``on_network_request(message)`` may change a network-management request (sign-on,
    echo, sign-off) before it is sent (default: unchanged; the switch sets the
    connector plugin's ``network`` hook).
    """

    def __init__(
        self,
        options: ConnectorOptions,
        *,
        reactor: object | None = None,
        clock: IReactorTime | None = None,
        rng: random.Random | None = None,
        registry: CollectorRegistry = REGISTRY,
        on_inbound_request: InboundRequestHook | None = None,
        on_late_response: LateResponseHook | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        clock = clock or reactor  # type: ignore[assignment]
        self.options = options
        self.name = options.name
        self.on_inbound_request: InboundRequestHook = on_inbound_request or self._unhandled_request
        self.on_network_request: Callable[[Message], Message] = lambda message: message
        self._log = structlog.get_logger("kswitch.link", connector=self.name)
        channel = Channel(options.name, options.dialect, options.framing, options.tpdu)
        self.links = tuple(
            Link(link, channel, self, reactor=reactor, clock=clock, rng=rng, registry=registry) for link in options.links
        )
        self.pool = LinkPool(self.links, options.pool_strategy)
        self.mux = Mux(
            options.name, options.dialect, self.pool, clock,  # type: ignore[arg-type]
            stans=StanAllocator(stan_start(clock.seconds())),  # type: ignore[union-attr]
            match_keys=MatchKeys(options.match_keys),
            request_timeout=options.request_timeout,
            max_in_flight=options.max_in_flight,
            late_window=options.late_response_window,
            registry=registry,
        )
        self.mux.on_late_response = on_late_response
        self._ready_waiters: list[Deferred[None]] = []
        self.add_observer(self._notify_ready)

    # -- for the gateway --------------------------------------------------------------

    def start(self) -> None:
        self.mux.resume()
        for link in self.links:
            link.start()

    def stop(self) -> Deferred[None]:
        """Stop taking requests, let the written ones finish (answer or timeout), then
        sign off and close every link."""
        def close_links(_: object) -> Deferred[object]:
            return DeferredList([link.stop() for link in self.links], consumeErrors=True)

        return self.mux.drain().addCallback(close_links).addCallback(lambda _: None)

    def request(
        self, message: Message, timeout: float | None = None, *, encoded: bytes | None = None
    ) -> Deferred[Message]:
        """See `Mux.request`."""
        return self.mux.request(message, timeout, encoded=encoded)

    def request_to(
        self, answer_to: Answerable[Message], message: Message, timeout: float | None = None, *, encoded: bytes | None = None
    ) -> None:
        """See `Mux.request_to`."""
        self.mux.request_to(answer_to, message, timeout, encoded=encoded)

    def reserve_stan(self, stan: str | None = None) -> str:
        """See `Mux.reserve_stan`: ``request`` owns the STAN once it has the message."""
        return self.mux.reserve_stan(stan)

    def release_stan(self, stan: str) -> None:
        """See `Mux.release_stan`: only for a STAN that never reached ``request``."""
        self.mux.release_stan(stan)

    @property
    def states(self) -> dict[str, LinkState]:
        return {link.name: link.state for link in self.links}

    @property
    def ready(self) -> bool:
        return any(link.ready for link in self.links)

    def add_observer(self, observer: StateObserver) -> None:
        """Call ``observer(link, old, new)`` on every state change of every link."""
        for link in self.links:
            link.add_observer(observer)

    def when_ready(self) -> Deferred[None]:
        """Fires once at least one link is ready (at once if one already is)."""
        if self.ready:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    def _notify_ready(self, link: Link, old: LinkState, new: LinkState) -> None:
        if new is LinkState.READY and self._ready_waiters:
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _unhandled_request(self, message: Message) -> None:
        self._log.warning("inbound_request_unhandled", mti=message.get("t"), stan=message.get("11"),
                          fields=mask_message(message, self.options.dialect))

    # -- LinkOwner --------------------------------------------------------------------

    def exchange(self, link: Link, message: Message, timeout: float) -> Deferred[Message]:
        return self.mux.exchange(link, self.on_network_request(message), timeout)

    def response_received(self, link: Link, message: Message) -> None:
        self.mux.response_received(link, message)

    def request_received(self, link: Link, message: Message) -> Deferred[Message | None]:
        return maybeDeferred(self.on_inbound_request, message)

    def link_lost(self, link: Link, reason: str) -> None:
        self.mux.link_lost(link, reason)
