"""The request/response multiplexer: many requests in flight over a connector's links.

`Mux.request` stamps a STAN, writes the request on a ready link and fires with the
response that matches it.  How it fails matters more than how it succeeds, because
the caller must decide whether money may have moved:

- `NoLinkAvailable`, `MuxBusy`: nothing was written; safe to retry or route elsewhere.
- `RequestTimeout`, `LinkLost`: the request was written and no answer came; the bank
  may have acted on it, so the caller reverses (see DOMAIN.md, reversals).

Every exception carries the STAN and ``written``.  A response that arrives after its
request gave up is a *late* response: counted, logged masked and (for callers'
requests, not the links' own echoes) handed to ``on_late_response`` so the switch can
journal (and reverse) a late approval; it is never raised.  Until then the request's STAN stays reserved, so a late answer can
never be mistaken for the answer to a newer request.

STAN ownership, so that no failure path leaks one: a STAN from `Mux.reserve_stan`
belongs to the caller until it hands the message to `Mux.request`; from then on it
belongs to the mux, which releases it on every outcome (at once when nothing was
written or the answer came; after the late-response window when the request was
written and given up, on a timer of the mux's clock).  A caller releases a reserved
STAN itself only when it never calls `request` (its message failed to build, its
journal write failed).
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush
from typing import Callable, ClassVar

import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from switch.bank.link import Link
from switch.bank.linkparts import LinkNotConnected
from switch.bank.matching import MatchKey, MatchKeys, is_mti
from switch.bank.numbering import StanAllocator
from switch.bank.pool import LinkPool
from switch.domain.answering import Answerable
from switch.iso.dialect import Dialect, Message
from switch.iso.masking import mask_message
from switch.iso.mti import is_request
from switch.observe.metrics import LATENCY_BUCKETS, Counter, Gauge, Histogram, MetricBundle

LateResponseHook = Callable[[Message], object]


class MuxError(Exception):
    """A request did not get its response. ``written`` says whether the bank may have it."""

    written: ClassVar[bool]

    def __init__(self, connector: str, stan: str | None, detail: str, link: str | None = None) -> None:
        self.connector = connector
        self.stan = stan
        self.link = link
        self.detail = detail
        where = f" on link {link}" if link else ""
        super().__init__(
            f"{connector}: {detail} (STAN {stan or '-'}{where}; {'written' if self.written else 'nothing written'})"
        )


class NoLinkAvailable(MuxError):
    """No link was ready (or the connector is stopping); nothing was written."""

    written = False


class MuxBusy(MuxError):
    """Over ``max_in_flight`` (or the same match key is already pending); nothing was written."""

    written = False


class RequestTimeout(MuxError):
    """Written, no answer within the timeout: the outcome at the bank is unknown."""

    written = True


class LinkLost(MuxError):
    """Written, and the link dropped before the answer: the outcome at the bank is unknown."""

    written = True


class MuxMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.pending = Gauge("kswitch_mux_pending", "Requests written and awaiting their response", ["connector"], registry=registry)
        self.response_seconds = Histogram(
            "kswitch_bank_response_seconds", "Time from writing a request to its matched response",
            ["connector"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.requests = Counter(
            "kswitch_mux_requests",
            "Requests by outcome: answered, timeout, link_lost, cancelled (written); busy, no_link, invalid (not written)",
            ["connector", "outcome"], registry=registry,
        )
        self.unmatched = Counter(
            "kswitch_mux_unmatched_responses", "Responses matching no request, pending or recently given up",
            ["connector"], registry=registry,
        )
        self.late = Counter(
            "kswitch_mux_late_responses", "Responses to requests that had already timed out or lost their link",
            ["connector"], registry=registry,
        )


class _Pending:
    """A caller's request awaiting its answer with the mux's own timeout, as nearly every payment is.

    A request with another timeout, or a link's own (sign-on, echo: not routed), is a `_Timed`. Keeping those
    two values out of the common case takes a request from 96 bytes to 80, one of every payment held
    (`bench/hold.sh`, issue 13's memory target)."""

    __slots__ = ("key", "stan", "mti", "link", "answer_to", "deadline")
    routed = True  # counts toward max_in_flight; `_Timed` says for itself

    def __init__(self, key: MatchKey, stan: str, mti: str, link: Link, answer_to: Answerable[Message],
                 deadline: float) -> None:
        self.key = key
        self.stan = stan
        self.mti = mti
        self.link = link
        self.answer_to = answer_to
        self.deadline = deadline  # sent at deadline - timeout: one float fewer per request waiting

    def __lt__(self, other: _Pending) -> bool:  # the mux's deadline heap
        return self.deadline < other.deadline


class _Timed(_Pending):
    """A request with a timeout of its own (a repeat's `response_timeout`), or a link's network request."""

    __slots__ = ("routed", "timeout")

    def __init__(self, key: MatchKey, stan: str, mti: str, link: Link, answer_to: Answerable[Message],
                 deadline: float, routed: bool, timeout: float) -> None:
        super().__init__(key, stan, mti, link, answer_to, deadline)
        self.routed = routed
        self.timeout = timeout


class Mux:
    """Pending-request table, STAN allocation and timeouts for one connector.

    ``stans`` is the connector's `StanAllocator`: ``stan in mux.stans`` tells whether a
    STAN is still pending, reserved or inside the late-response window.
    """

    def __init__(
        self,
        connector: str,
        dialect: Dialect,
        pool: LinkPool[Link],
        clock: IReactorTime,
        *,
        stans: StanAllocator,
        match_keys: MatchKeys | None = None,
        request_timeout: float = 30.0,
        max_in_flight: int = 1000,
        late_window: float = 120.0,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.connector = connector
        self.on_late_response: LateResponseHook | None = None
        self._dialect = dialect
        self._pool = pool
        self._clock = clock
        self.stans = stans
        self._keys = match_keys or MatchKeys()
        self._timeout = request_timeout
        self._max_in_flight = max_in_flight
        self._late_window = late_window
        self._pending: dict[MatchKey, _Pending] = {}
        self._routed = 0
        self._reserved: dict[str, int] = {}  # reserved, not yet handed to `request`: holders per STAN
        self._given_up: dict[MatchKey, _Pending] = {}
        self._given_up_order: deque[tuple[float, _Pending]] = deque()
        self._expiry: IDelayedCall | None = None
        # Timeouts: one timer for the earliest deadline of a heap, not one IDelayedCall per request
        # (about 0.4 KB each with 10,000 payments held). Answered requests leave the heap lazily.
        self._deadlines: list[_Pending] = []
        self._sweep: IDelayedCall | None = None
        self._sweep_at = 0.0
        self._canceller = self._cancelled  # one bound method for every request's Deferred
        self._accepting = True
        self._drained: list[Deferred[None]] = []
        self._log = structlog.get_logger("kswitch.mux", connector=connector)
        metrics = MuxMetrics.on(registry)
        self._pending_gauge = metrics.pending.labels(connector)
        self._latency = metrics.response_seconds.labels(connector)
        self._outcomes = {o: metrics.requests.labels(connector, o) for o in
                          ("answered", "timeout", "link_lost", "cancelled", "busy", "no_link", "invalid")}
        self._unmatched = metrics.unmatched.labels(connector)
        self._late = metrics.late.labels(connector)

    @property
    def in_flight(self) -> int:
        """Callers' requests written and awaiting an answer."""
        return self._routed

    # -- callers ----------------------------------------------------------------------

    def request(
        self, message: Message, timeout: float | None = None, *, encoded: bytes | None = None
    ) -> Deferred[Message]:
        """Send ``message`` on a ready link and fire with its response (`request_to`, with a Deferred
        that may be cancelled: the request is then given up)."""
        answered: Deferred[Message] = Deferred(self._canceller)
        self.request_to(answered, message, timeout, encoded=encoded)
        return answered

    def request_to(
        self, answer_to: Answerable[Message], message: Message, timeout: float | None = None, *, encoded: bytes | None = None
    ) -> None:
        """Send ``message`` on a ready link and tell ``answer_to`` its response or why there is none.

        Field 11 is set here (a STAN from `reserve_stan` in field 11 is used as is).
        ``encoded`` is the message as the links' dialect already encoded it (`Engine.check_encodes`):
        written as is when field 11 stays, so a payment is not encoded twice.
        Fails with `NoLinkAvailable`, `MuxBusy`, `RequestTimeout`, `LinkLost`, or
        `MessageError` / `ValueError` for a message that cannot be sent (not written).
        """
        self._expire_given_up()
        mti = message.get("t", "")
        stan = message.get("11") if message.get("11") in self._reserved else None
        if not is_mti(mti) or not is_request(mti):
            error: Exception = ValueError(f"{self.connector}: MTI {mti!r} is not a request or advice")
            return self._refuse("invalid", error, stan, answer_to)
        if not self._accepting:
            return self._refuse("no_link", NoLinkAvailable(self.connector, stan, "connector is stopping"), stan, answer_to)
        if self._routed >= self._max_in_flight:
            busy = f"{self._routed} requests in flight (max_in_flight {self._max_in_flight})"
            return self._refuse("busy", MuxBusy(self.connector, stan, busy), stan, answer_to)
        link = self._pool.select()
        if link is None:
            return self._refuse("no_link", NoLinkAvailable(self.connector, stan, "no link is ready"), stan, answer_to)
        timeout = self._timeout if timeout is None else timeout
        self._send(link, message, timeout, True, encoded, answer_to)

    def _refuse(self, outcome: str, error: Exception, stan: str | None, answer_to: Answerable[Message]) -> None:
        """Nothing written: count it, give the caller's reserved STAN back, fail."""
        self._outcomes[outcome].inc()
        if stan is not None:
            self.release_stan(stan)
        answer_to.errback(error)

    def reserve_stan(self, stan: str | None = None) -> str:
        """A STAN for a request the caller must journal before it is sent: put it in
        field 11 of the message given to `request` (which then owns it, whatever the
        outcome), or give it back with `release_stan` if `request` is never called.
        ``stan`` reserves that number (an advice's repeat keeps its original's STAN)."""
        stan = self.stans.allocate() if stan is None else self.stans.claim(stan)
        self._reserved[stan] = self._reserved.get(stan, 0) + 1
        return stan

    def release_stan(self, stan: str) -> None:
        """Give back a reserved STAN that was never handed to `request`; a no-op otherwise."""
        if stan in self._reserved:
            self._unreserve(stan)
            self.stans.release(stan)

    def _unreserve(self, stan: str) -> None:
        """One holder's reservation ends; a STAN claimed twice (`StanAllocator.claim`) stays reserved
        for the other, who sends with it: the mux never gives a claimed number's message another."""
        holders = self._reserved[stan]
        if holders > 1:
            self._reserved[stan] = holders - 1
        else:
            del self._reserved[stan]

    def drain(self) -> Deferred[None]:
        """Refuse new requests; fire when every written request has its outcome."""
        self._accepting = False
        done: Deferred[None] = Deferred()
        if self._routed:
            self._drained.append(done)
        else:
            done.callback(None)
        return done

    def resume(self) -> None:
        self._accepting = True

    # -- links ------------------------------------------------------------------------

    def exchange(self, link: Link, message: Message, timeout: float) -> Deferred[Message]:
        """A link's own network-management request (sign-on, echo, sign-off) on that link."""
        answered: Deferred[Message] = Deferred(self._canceller)
        self._send(link, message, timeout, False, None, answered)
        return answered

    def response_received(self, link: Link, message: Message) -> None:
        self._expire_given_up()
        key = self._keys.key(message)
        pending = self._pending.pop(key, None)
        if pending is not None:
            if not self._pending:
                self._stop_sweeping()
            self.stans.release(pending.stan)
            if pending.routed:
                self._latency.observe(self._clock.seconds() - (pending.deadline - self._timeout_of(pending)))
            self._finished(pending, "answered")
            pending.answer_to.callback(message)
            return
        masked = mask_message(message, self._dialect)
        given_up = self._given_up.get(key)
        if given_up is not None:
            self._late.inc()
            self._log.warning("mux_late_response", link=link.name, mti=message["t"], stan=message.get("11"),
                              rc=message.get("39"), fields=masked)
            if given_up.routed and self.on_late_response is not None:
                try:
                    self.on_late_response(message)
                except Exception:
                    self._log.exception("late_response_hook_failed", mti=message["t"], stan=message.get("11"))
        else:
            self._unmatched.inc()
            self._log.warning("mux_unmatched_response", link=link.name, mti=message["t"], stan=message.get("11"),
                              rc=message.get("39"), fields=masked)

    def link_lost(self, link: Link, reason: str) -> None:
        """Fail everything written on ``link`` now: waiting for the timeout would only
        delay the reversal."""
        lost = [p for p in self._pending.values() if p.link is link]
        if not lost:
            return
        self._log.warning("mux_link_lost", link=link.name, reason=reason, requests=len(lost),
                          stans=[p.stan for p in lost if p.routed])
        for pending in lost:
            self._give_up(pending, "link_lost")
            pending.answer_to.errback(LinkLost(self.connector, pending.stan, f"link dropped: {reason}", link.name))

    # -- internals --------------------------------------------------------------------

    def _send(
        self, link: Link, message: Message, timeout: float, routed: bool, encoded: bytes | None, answer_to: Answerable[Message]
    ) -> None:
        stan = message.get("11")
        if stan is not None and stan in self._reserved:
            self._unreserve(stan)  # the mux owns it from here (see the module docstring)
        else:
            stan = self.stans.allocate()
        # The caller's message is not modified; with its own reserved STAN it is sent as it is.
        outbound = message if message.get("11") == stan else {**message, "11": stan}
        key = self._keys.filing(outbound)
        failure: Exception | None = None
        if key in self._pending:
            failure = MuxBusy(self.connector, stan, f"a request with match key {key} is already pending")
        else:
            deadline = self._clock.seconds() + timeout
            if routed and timeout == self._timeout:
                pending = _Pending(key, stan, outbound["t"], link, answer_to, deadline)
            else:
                pending = _Timed(key, stan, outbound["t"], link, answer_to, deadline, routed, timeout)
            self._pending[key] = pending
            try:
                link.send(outbound, encoded if outbound is message else None)
            except LinkNotConnected as e:
                failure = NoLinkAvailable(self.connector, stan, str(e), link.name)
            except Exception as e:  # MessageError, or anything else that kept the bytes off the wire
                failure = e
            if failure is not None:
                del self._pending[key]
        if failure is not None:
            self.stans.release(stan)
            if routed:
                outcome = {MuxBusy: "busy", NoLinkAvailable: "no_link"}.get(type(failure), "invalid")
                self._outcomes[outcome].inc()
            answer_to.errback(failure)
            return
        self._watch_deadline(pending)
        if routed:
            self._routed += 1
        self._pending_gauge.set(len(self._pending))

    def _watch_deadline(self, pending: _Pending) -> None:
        heappush(self._deadlines, pending)
        if len(self._deadlines) > 2 * len(self._pending) + 64:  # mostly answered entries: drop them
            self._deadlines[:] = [p for p in self._deadlines if self._pending.get(p.key) is p]
            heapify(self._deadlines)
        self._arm_sweep()

    def _arm_sweep(self) -> None:
        """The one timer, due at the earliest deadline still pending."""
        deadlines = self._deadlines
        while deadlines and self._pending.get(deadlines[0].key) is not deadlines[0]:
            heappop(deadlines)
        if not deadlines:
            self._stop_sweeping()
            return
        due = deadlines[0].deadline
        if self._sweep is not None and self._sweep.active():
            if self._sweep_at <= due:
                return
            self._sweep.cancel()
        self._sweep_at = due
        self._sweep = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._sweep_due)

    def _stop_sweeping(self) -> None:
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        self._deadlines.clear()

    def _sweep_due(self) -> None:
        self._sweep = None
        now = max(self._clock.seconds(), self._sweep_at)  # the timer's own deadline counts as reached
        deadlines = self._deadlines
        while deadlines and deadlines[0].deadline <= now:
            pending = heappop(deadlines)
            if self._pending.get(pending.key) is pending:
                self._timed_out(pending)
        self._arm_sweep()

    def _timed_out(self, pending: _Pending) -> None:
        timeout = self._timeout_of(pending)
        self._log.warning("mux_timeout", link=pending.link.name, mti=pending.mti, stan=pending.stan, after=timeout)
        self._give_up(pending, "timeout")
        pending.answer_to.errback(
            RequestTimeout(self.connector, pending.stan, f"no response within {timeout}s", pending.link.name)
        )

    def _timeout_of(self, pending: _Pending) -> float:
        return pending.timeout if isinstance(pending, _Timed) else self._timeout

    def _cancelled(self, deferred: Deferred[Message]) -> None:
        """The caller cancelled the Deferred: treat as given up (the request was written)."""
        for pending in self._pending.values():
            if pending.answer_to is deferred:
                self._give_up(pending, "cancelled")
                return

    def _give_up(self, pending: _Pending, outcome: str) -> None:
        """Forget the request but keep its STAN and key for the late-response window."""
        del self._pending[pending.key]
        if not self._pending:
            self._stop_sweeping()
        self._given_up[pending.key] = pending
        self._given_up_order.append((self._clock.seconds() + self._late_window, pending))
        self._schedule_expiry()
        self._finished(pending, outcome)

    def _finished(self, pending: _Pending, outcome: str) -> None:
        self._pending_gauge.set(len(self._pending))
        if not pending.routed:
            return
        self._outcomes[outcome].inc()
        self._routed -= 1
        if not self._routed and self._drained:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def _schedule_expiry(self) -> None:
        """One timer, at the oldest given-up request's end of window: its STAN comes back
        even when no other traffic passes through the mux."""
        if self._expiry is not None and self._expiry.active() or not self._given_up_order:
            return
        delay = max(0.0, self._given_up_order[0][0] - self._clock.seconds())
        self._expiry = self._clock.callLater(delay, self._expiry_due)

    def _expiry_due(self) -> None:
        self._expiry = None
        self._expire_given_up()

    def _expire_given_up(self) -> None:
        now = self._clock.seconds()
        order = self._given_up_order
        while order and order[0][0] <= now:
            _, pending = order.popleft()
            if self._given_up.get(pending.key) is pending:
                del self._given_up[pending.key]
            self.stans.release(pending.stan)
        self._schedule_expiry()
