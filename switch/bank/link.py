"""Bank links: one persistent connection each, kept up, signed on and proven alive.

A `Link` owns one configured address.  It connects (TLS 1.2+ with a client
certificate unless the configuration explicitly says plaintext), optionally signs on,
and only then declares itself ``ready`` for traffic.  It watches the bank with echo
tests, reconnects with jittered exponential backoff when anything goes wrong, answers
the bank's own echo and sign-on requests, and hands every other message to its owner
(the connector's mux and inbound-request hook).  Matching requests to responses is not
done here: responses may legitimately arrive on another link of the same pool.

The wire protocol (`switch.bank.linkparts.LinkProtocol`) is deliberately thin; the `Link` object outlives
its connections and decides everything, so each decision is made in one place with a
clock that tests can drive.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Protocol

import structlog
from OpenSSL import SSL
from prometheus_client import REGISTRY, CollectorRegistry
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from switch.bank.keepalive import SignOnAndEcho
from switch.bank.linkparts import (
    Backoff,
    Channel,
    LinkFactory,
    LinkMetrics,
    LinkNotConnected,
    LinkOptions,
    LinkProtocol,
    LinkState,
    tls_details,
)
from switch.bank.tls import client_connection_creator
from switch.iso.dialect import Message, MessageError
from switch.iso.framing import Frame, FramingError, swap_tpdu
from switch.iso.masking import mask_message
from switch.iso.mti import is_network, is_request, network_kind, network_response
from switch.net import turnwrites
from switch.observe.metrics import Counter

# Network-management requests from the bank that the link answers itself.
_ANSWERED_NETWORK_KINDS = ("echo", "sign_on", "sign_off")


class LinkOwner(Protocol):
    """What a link needs from its connector."""

    def exchange(self, link: Link, message: Message, timeout: float) -> Deferred[Message]:
        """Send a network-management request on this very link and wait for its answer."""

    def response_received(self, link: Link, message: Message) -> None: ...

    def request_received(self, link: Link, message: Message) -> Deferred[Message | None]:
        """A bank-initiated request or advice; the answer (if any) goes back on the link."""

    def link_lost(self, link: Link, reason: str) -> None:
        """The connection is gone: whatever was written on it will get no answer here."""


StateObserver = Callable[["Link", LinkState, LinkState], object]


class Link(SignOnAndEcho):
    """A persistent, self-healing connection to one bank address.

    ``reactor`` connects; ``clock`` (default: the reactor) times everything else, so
    tests drive backoff, echo and sign-on timing with `twisted.internet.task.Clock`.
    """

    def __init__(
        self,
        options: LinkOptions,
        channel: Channel,
        owner: LinkOwner,
        *,
        reactor: object,
        clock: IReactorTime | None = None,
        rng: random.Random | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.options = options
        self.name = options.name
        self.channel = channel
        self._owner = owner
        self._reactor = reactor
        self._clock: IReactorTime = clock or reactor  # type: ignore[assignment]
        self._backoff = Backoff(
            options.reconnect_initial, options.reconnect_max, options.reconnect_factor, options.reconnect_jitter,
            rng or random.Random(),
        )
        self._creator = client_connection_creator(options.tls, options.host) if options.tls else None
        self._version = channel.dialect.version
        # Lazy: follows a later logs.configure(), unlike a logger bound now.
        self._log = structlog.get_logger("kswitch.link", connector=channel.connector, link=self.name)
        self._state = LinkState.STOPPED
        self._running = False
        self._observers: list[StateObserver] = []
        self._attempt: Deferred[object] | None = None
        self._protocol: LinkProtocol | None = None
        self._connected = False
        self._drop_reason: str | None = None
        self._timer: IDelayedCall | None = None  # reconnect, connect timeout or close deadline
        self._echo_timer: IDelayedCall | None = None
        self._echo_failures = 0
        self._last_inbound = 0.0
        self._closed: list[Deferred[None]] = []
        metrics = LinkMetrics.on(registry)
        self._metrics = metrics
        self._labels = (channel.connector, self.name)
        self._up = metrics.up.labels(*self._labels)
        # Created now so that every series exists (at 0) before the first incident.
        self._reconnects = metrics.reconnects.labels(*self._labels)
        self._tls_failures = metrics.tls_failures.labels(*self._labels)
        self._echo_failure_count = metrics.echo_failures.labels(*self._labels)
        self._bad_frames = metrics.bad_frames.labels(*self._labels)
        self._state_gauges = {s: metrics.state.labels(*self._labels, s.value) for s in LinkState}
        self._message_counters: dict[tuple[str, str], Counter] = {}
        self._publish_state()

    # -- observable state -------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is LinkState.READY

    @property
    def tls(self) -> bool:
        return self._creator is not None

    def add_observer(self, observer: StateObserver) -> None:
        """Call ``observer(link, old, new)`` on every state change."""
        self._observers.append(observer)

    def remove_observer(self, observer: StateObserver) -> None:
        self._observers.remove(observer)

    def _set_state(self, new: LinkState) -> None:
        """Record and announce a state.  Observers may call back into the link (even
        stop it), so callers announce last or re-check ``_running`` afterwards."""
        old = self._state
        if new is old:
            return
        self._state = new
        self._publish_state()
        self._log.info("link_state", old=old.value, new=new.value)
        for observer in tuple(self._observers):
            try:
                observer(self, old, new)
            except Exception:
                self._log.exception("link_observer_failed", observer=repr(observer))

    def _publish_state(self) -> None:
        for state, gauge in self._state_gauges.items():
            gauge.set(1 if state is self._state else 0)
        self._up.set(1 if self._state is LinkState.READY else 0)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._running or self._protocol is not None or self._attempt is not None:
            raise RuntimeError(f"link {self.name} is already running or still closing ({self._state.value})")
        self._running = True
        if self._creator is None:
            self._log.warning("link_plaintext", host=self.options.host, port=self.options.port,
                              detail="tls is not configured: card data will cross this link unencrypted")
        self._backoff.reset()
        self._connect()

    def stop(self) -> Deferred[None]:
        """Stop for good: no reconnect; sign off first when ready and configured.

        Fires once the connection is closed, within about twice ``echo_timeout``."""
        was_ready = self._state is LinkState.READY
        self._running = False
        self._cancel_timers()
        if self._attempt is not None:
            self._attempt.cancel()
        protocol = self._protocol
        if protocol is None:
            self._set_state(LinkState.STOPPED)
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closed.append(closed)
        if was_ready and self.options.sign_off_on_stop:
            self._log.info("link_sign_off_sent")
            answer = self._owner.exchange(self, self._network("sign_off"), self.options.echo_timeout)
            answer.addBoth(self._signed_off, protocol)
        else:
            self._close(protocol)
        self._set_state(LinkState.STOPPED)
        return closed

    def _signed_off(self, result: Message | Failure, protocol: LinkProtocol) -> None:
        if isinstance(result, Failure):
            self._log.warning("link_sign_off_failed", reason=result.getErrorMessage())
        else:
            self._log.info("link_signed_off", rc=result.get("39"))
        self._close(protocol)

    def _close(self, protocol: LinkProtocol) -> None:
        if protocol is not self._protocol or protocol.transport is None:
            return
        self._drop_reason = "stopped"
        turnwrites.lose_connection(protocol.transport)  # after the frames this turn wrote
        self._cancel_timers()
        self._timer = self._clock.callLater(self.options.echo_timeout, protocol.transport.abortConnection)

    def _connect(self) -> None:
        self._log.info("link_connecting", host=self.options.host, port=self.options.port, tls=self.tls)
        self._timer = self._clock.callLater(self.options.connect_timeout, self._connect_timed_out)
        endpoint = HostnameEndpoint(self._reactor, self.options.host, self.options.port, timeout=self.options.connect_timeout)
        attempt = (wrapClientTLS(self._creator, endpoint) if self._creator else endpoint).connect(LinkFactory(self))
        self._attempt = attempt
        attempt.addCallbacks(self._attempt_done, self._connect_failed)
        if self._attempt is attempt:  # not already failed (a bad host name fails at once)
            self._set_state(LinkState.CONNECTING)

    def _attempt_done(self, protocol: object) -> None:
        self._attempt = None

    def _connect_failed(self, failure: Failure) -> None:
        self._attempt = None
        if not self._running:
            return
        self._log.warning("link_connect_failed", host=self.options.host, port=self.options.port,
                          reason=failure.getErrorMessage() or failure.type.__name__)
        self._retry()

    def _connect_timed_out(self) -> None:
        self._timer = None
        self._log.warning("link_connect_timeout", host=self.options.host, port=self.options.port,
                          after=self.options.connect_timeout)
        if self._protocol is not None:
            self._drop(self._protocol, f"no connection or TLS handshake within {self.options.connect_timeout}s")
        elif self._attempt is not None:
            self._attempt.cancel()

    def _retry(self) -> None:
        self._cancel_timers()
        delay = self._backoff.next_delay()
        self._log.info("link_reconnect_scheduled", delay=round(delay, 3))
        self._timer = self._clock.callLater(delay, self._reconnect)
        self._set_state(LinkState.DOWN)

    def _reconnect(self) -> None:
        self._timer = None
        self._reconnects.inc()
        self._connect()

    def _cancel_timers(self) -> None:
        for name in ("_timer", "_echo_timer"):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)

    def _drop(self, protocol: LinkProtocol, reason: str) -> None:
        """Abort this connection; `connection_lost` then reconnects."""
        if protocol is not self._protocol or protocol.transport is None:
            return
        self._log.warning("link_dropping", reason=reason)
        self._drop_reason = reason
        protocol.transport.abortConnection()

    # -- protocol callbacks -----------------------------------------------------------

    def connection_started(self, protocol: LinkProtocol) -> None:
        """TCP is up (the TLS handshake may still be running): from now on the
        connection, not the attempt, is what `stop` and timeouts close."""
        self._attempt = None
        self._protocol = protocol
        self._connected = False

    def connection_made(self, protocol: LinkProtocol) -> None:
        """TCP up and, with TLS, the handshake verified: the link may speak."""
        if protocol is not self._protocol:
            return
        self._connected = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._last_inbound = self._clock.seconds()
        self._log.info("link_connected", peer=str(protocol.transport.getPeer()), **tls_details(protocol))
        if not self._running:
            self._close(protocol)
        elif self.options.sign_on:
            self._sign_on(protocol)
        else:
            self._become_ready()

    def connection_lost(self, protocol: LinkProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        was_connected = self._connected
        self._protocol = None
        self._connected = False
        self._cancel_timers()
        why = self._drop_reason or reason.getErrorMessage() or reason.type.__name__
        self._drop_reason = None
        if reason.check(SSL.Error) or (self.tls and not was_connected):
            self._tls_failures.inc()
            self._log.error("link_tls_failed", host=self.options.host, port=self.options.port,
                            server_name=(self.options.tls and self.options.tls.server_name) or self.options.host,
                            reason=why)
        elif not self._running:
            self._log.info("link_disconnected", reason=why)
        else:
            self._log.warning("link_disconnected", reason=why)
        if not self._running:
            self._owner.link_lost(self, why)
            closed, self._closed = self._closed, []
            self._log.info("link_stopped")
            for d in closed:
                d.callback(None)
            return
        # Out of the rotation first, so callers failed by link_lost can retry elsewhere.
        self._retry()
        self._owner.link_lost(self, why)

    def frame_received(self, protocol: LinkProtocol, frame: Frame) -> None:
        if protocol is not self._protocol:
            return
        self._last_inbound = self._clock.seconds()
        if not frame.payload:
            return
        try:
            message = self.channel.dialect.decode(frame.payload)
            mti = message.get("t", "")
            if not (len(mti) == 4 and mti.isdigit()):
                raise MessageError(f"MTI is not four digits ({len(mti)} characters)", "t")
        except MessageError as e:
            self._bad_frames.inc()
            self._log.error("iso_bad_frame", field=e.field, offset=e.offset, reason=e.reason, length=len(frame.payload))
            return
        self._count("in", mti)
        self._trace("iso_in", message)
        try:
            if is_request(mti):
                self._request_received(protocol, message, frame.tpdu)
            else:
                self._owner.response_received(self, message)
        except Exception:
            self._log.exception("link_inbound_failed", mti=mti, stan=message.get("11"))

    # -- traffic ----------------------------------------------------------------------

    def send(self, message: Message, encoded: bytes | None = None) -> None:
        """Write a request now (``encoded``: the same message already encoded by this link's dialect).
        Raises `MessageError` or `LinkNotConnected`; either way nothing was written."""
        if self._protocol is None or not self._connected:
            raise LinkNotConnected(f"link {self.name} is {self._state.value}")
        self._write(self._protocol, message, self.channel.tpdu, encoded)

    def _write(
        self, protocol: LinkProtocol, message: Message, tpdu: bytes | None, encoded: bytes | None = None
    ) -> None:
        payload = self.channel.dialect.encode(message) if encoded is None else encoded
        try:
            protocol.sendFrame(payload, tpdu)
        except FramingError as e:
            raise MessageError(str(e)) from None
        self._count("out", message["t"])
        self._trace("iso_out", message)

    def _trace(self, event: str, message: Message) -> None:
        """Log one message, masked, at debug: the journal already holds every payment message, so
        at info the reactor does not render ~1 KB per message (README "Logs"); masking is skipped
        when the level drops the event anyway."""
        if self._log.is_enabled_for(logging.DEBUG):
            self._log.debug(event, mti=message["t"], stan=message.get("11"), rc=message.get("39"),
                           fields=mask_message(message, self.channel.dialect))

    def _count(self, direction: str, mti: str) -> None:
        counter = self._message_counters.get((direction, mti))
        if counter is None:
            counter = self._metrics.messages.labels(*self._labels, direction, mti)
            self._message_counters[(direction, mti)] = counter
        counter.inc()

    def _request_received(self, protocol: LinkProtocol, message: Message, tpdu: bytes | None) -> None:
        reply_tpdu = swap_tpdu(tpdu) if tpdu is not None else None
        kind = network_kind(message, self._version) if is_network(message["t"]) else None
        if kind in _ANSWERED_NETWORK_KINDS:
            # A bank's sign-off is answered and logged; whether it then declines traffic
            # or closes the connection is the bank's move, and the link reacts to that.
            level = self._log.warning if kind == "sign_off" else self._log.info
            level("link_network_request", kind=kind, stan=message.get("11"))
            self._reply(protocol, network_response(message, self._version), reply_tpdu)
            return
        answer = maybeDeferred(self._owner.request_received, self, message)
        answer.addCallback(self._reply_if_any, protocol, reply_tpdu)
        answer.addErrback(self._inbound_handler_failed, message)

    def _reply_if_any(self, answer: Message | None, protocol: LinkProtocol, tpdu: bytes | None) -> None:
        if answer is not None:
            self._reply(protocol, answer, tpdu)

    def _inbound_handler_failed(self, failure: Failure, message: Message) -> None:
        self._log.error("inbound_request_failed", mti=message["t"], stan=message.get("11"),
                        reason=failure.getErrorMessage(), error=failure.type.__name__)

    def _reply(self, protocol: LinkProtocol, answer: Message, tpdu: bytes | None) -> None:
        if protocol is not self._protocol:
            self._log.warning("link_reply_dropped", mti=answer.get("t"), stan=answer.get("11"),
                              reason="the connection the request came on is gone")
            return
        try:
            self._write(protocol, answer, tpdu)
        except MessageError as e:
            self._log.error("link_reply_unencodable", mti=answer.get("t"), field=e.field, reason=e.reason)
