"""Store-and-forward: reversals, voids and repeated advices delivered until the bank acknowledges them.

Items live in the journal, so they survive restarts.  Order is kept only where it matters:
the items of one payment (a transaction and the operations on it) go strictly in queue
order, because a bank that sees a void before the reversal of the same payment can
mismatch them; items of different payments go independently, up to ``max_in_flight`` at
once per connector, so an item the bank keeps refusing, or one that cannot be built, holds
up nothing but its own payment.  The first send uses the item's MTI (0400 or 0420); every
later one the repeat MTI (0401/0421), so the bank can tell a repeat from a new reversal.

Every attempt counts: a send that gets no final answer, and a failure before the write
(the message cannot be built or encoded, or the outgoing message cannot be journalled).
After ``max_attempts`` the item is dead-lettered with its reason (visible in metrics, a
``saf.dead_letter`` event, and ``kswitch saf list``), never dropped silently.  What is not
an attempt: no ready link, or the connector at its own ``max_in_flight`` (nothing was
written and nothing was wrong with the item); the item stays due and goes at the next poll.

A final answer completes the item in the commit of the outcome it settles (`SafAcknowledged`): the
reversal or void journalled, the operation finished with its parent's totals. If that commit fails, the item
is still queued and goes again, as a repeat, after an attempt counted (cause ``unsettled``) when the journal
can count it; had the item been completed by a commit of its own, a failure of the next would have left its
payment ``timeout`` with nothing left to settle it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from switch.bank.mux import MuxError
from switch.domain.panscan import looks_like_pan
from switch.domain.status import Status
from switch.iso.dialect import Message
from switch.iso.masking import mask_message
from switch.iso.translate import reversal_request
from switch.journal import Journal
from switch.journal.errors import TransitionRefused
from switch.journal.models import Direction, EventDraft, SafAcknowledged, SafItem, SafKind, SafState, utc_from_seconds
from switch.observe import logs
from switch.observe.metrics import Counter, MetricBundle

log = structlog.get_logger("kswitch.saf")

# A transaction whose reversal the bank acknowledged ends here, whatever it was before.
REVERSIBLE = (Status.PENDING, Status.TIMEOUT, Status.REVERSAL_PENDING, Status.APPROVED)


@dataclass(frozen=True)
class SafOptions:
    """Per-connector store-and-forward settings. Defaults:

    - ``retry_interval`` 30 s before the first repeat, multiplied by ``backoff`` (2.0) each
      time up to ``max_interval`` (600 s);
    - ``max_attempts`` 10 attempts without a final answer (failures before the write
      included), then dead letter;
    - ``response_timeout`` None = the connector's request timeout;
    - ``max_in_flight`` 4 items of different payments sent at once on this connector.
    """

    retry_interval: float = 30.0
    backoff: float = 2.0
    max_interval: float = 600.0
    max_attempts: int = 10
    response_timeout: float | None = None
    max_in_flight: int = 4

    def delay_after(self, attempts: int) -> float:
        return min(self.retry_interval * self.backoff ** max(attempts - 1, 0), self.max_interval)


class SafMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.sent = Counter("kswitch_saf_sent_total", "Store-and-forward sends, by connector, kind and MTI",
                            ["connector", "kind", "mti"], registry=registry)
        self.acknowledged = Counter("kswitch_saf_acknowledged_total", "Store-and-forward items the bank acknowledged",
                                    ["connector", "kind"], registry=registry)
        self.failed = Counter(
            "kswitch_saf_failed_attempts_total",
            "Store-and-forward attempts without a final answer: not_sent (could not be built, encoded or "
            "journalled), no_answer, retryable (a response code asking to repeat), unreadable_answer, unsettled "
            "(answered, its outcome not journalled)",
            ["connector", "kind", "cause"], registry=registry,
        )


class StoreAndForward:
    """Sends due items of every connector with a ready link; see the module docstring.

    ``poll`` runs every ``poll_interval`` (with the queue metrics) and after every delivery that
    settled or counted its item (`kick`); polls never overlap, and an item is never sent twice at
    once (``_in_flight``, ``_finished``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        journal: Journal,
        banks: Mapping[str, Any],
        registry: CollectorRegistry,
        poll_interval: float = 1.0,
    ) -> None:
        self.clock = clock
        self.journal = journal
        self.banks = banks
        self.metrics = SafMetrics.on(registry)
        self._in_flight: dict[str, dict[int, str]] = {}
        """Per connector: saf_id -> txn_id of the items being delivered."""
        self._finished: set[int] = set()
        """Items whose delivery ended while the current ready-read ran (that read may be stale for them)."""
        self._answered_unsettled: set[int] = set()
        """Items the bank answered whose outcome's commit failed: the bank has seen them, so they go again as repeats."""
        self._deliveries: set[Deferred[None]] = set()
        self._polling = False
        self._poll_again = False
        self._poll_waiters: list[Deferred[None]] = []
        self._loop = LoopingCall(lambda: ensureDeferred(self._tick()))
        self._loop.clock = clock
        self._poll_interval = poll_interval
        self._stopped = False
        self.build: Callable[[Any, SafItem, str, bool], Message] = self.build_reversal
        """Builds the message for one send of an item (bank, item, new STAN, repeat?); the
        transaction engine replaces it so every message class and plugin is served. A raise
        is a counted attempt."""
        self.settle: Callable[[SafItem, Message], Awaitable[None]] = self.settle_reversal
        """Records what a final answer to an item means for its transaction (set by the engine)."""

    def start(self) -> None:
        self._loop.start(self._poll_interval, now=True).addErrback(
            lambda f: logs.failed(log, "saf_loop_failed", f)
        )

    def stop(self) -> None:
        self._stopped = True
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> Deferred[None]:
        """Start sending the ready items of every connector with a ready link and room in flight.

        Fires once the items are handed to their deliveries (not when those end: see `idle`).
        A poll asked for while one runs makes that one look again, and fires when it is done.
        """
        if self._polling:
            self._poll_again = True
            waiter: Deferred[None] = Deferred()
            self._poll_waiters.append(waiter)
            return waiter
        return ensureDeferred(self._poll())

    async def _tick(self) -> None:
        await self.poll()
        try:
            await self.journal.refresh_saf_metrics()
        except Exception as e:
            log.error("saf_metrics_failed", error=_describe(e))

    def idle(self) -> Deferred[None]:
        """Fires when the deliveries under way now have ended."""
        return DeferredList(list(self._deliveries)).addCallback(lambda _: None)

    async def _poll(self) -> None:
        self._polling = True
        try:
            while not self._stopped:
                self._poll_again = False
                for name, bank in self.banks.items():
                    await self._dispatch(name, bank)
                if not self._poll_again:
                    break
        except Exception as e:  # the journal is briefly unavailable: the next poll tries again
            log.error("saf_poll_failed", error=_describe(e))
        finally:
            self._polling = False
            waiters, self._poll_waiters = self._poll_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    async def _dispatch(self, connector: str, bank: Any) -> None:
        busy = self._in_flight.setdefault(connector, {})
        room = bank.saf.max_in_flight - len(busy)
        if self._stopped or not bank.ready or room <= 0:
            return
        self._finished.clear()
        items = await self.journal.saf_ready(
            connector, due_by=utc_from_seconds(self.clock.seconds()), limit=room + len(busy)
        )
        for item in items:
            if room <= 0 or self._stopped:
                break
            if item.saf_id in busy or item.saf_id in self._finished or item.txn_id in busy.values():
                continue
            room -= 1
            busy[item.saf_id] = item.txn_id
            delivery = ensureDeferred(self._deliver(bank, item))
            self._deliveries.add(delivery)
            delivery.addBoth(lambda _, d=delivery: self._deliveries.discard(d))

    def kick(self, connector: str) -> None:
        """Try at once (after an enqueue or a delivery) rather than at the next poll."""
        if not self._stopped:
            self.poll()

    async def _deliver(self, bank: Any, item: SafItem) -> None:
        settled = False
        try:
            settled = await self._attempt(bank, item)
        except Exception as e:  # the attempt could not even be recorded (journal down): it stays due
            log.error("saf_delivery_failed", connector=item.connector, saf_id=item.saf_id, txn_id=item.txn_id,
                      error=_describe(e))
        finally:
            self._in_flight.get(item.connector, {}).pop(item.saf_id, None)
            self._finished.add(item.saf_id)
        if settled:  # the next item, or the next of this payment, goes now; otherwise at the next poll
            self.kick(item.connector)

    def build_reversal(self, bank: Any, item: SafItem, stan: str, repeat: bool) -> Message:
        """Today's message class for every item: a reversal of the journalled original."""
        card = self.journal.reveal_card(item.card) if item.card is not None else None
        original = dict(item.fields)
        if card is not None:
            original["2"] = card.pan
            if card.expiry:
                original["14"] = card.expiry
        message = reversal_request(original, bank.profile, stan, self.clock.seconds(), repeat=repeat)
        return bank.plugin.reversal_message(message, original)

    async def _attempt(self, bank: Any, item: SafItem) -> bool:
        """One counted attempt, unless nothing was written for want of a link or of room.
        True when the item was answered or its attempt recorded."""
        options: SafOptions = bank.saf
        stan = bank.reserve_stan()
        message: Message | None = None
        try:
            message = self.build(bank, item, stan, item.attempts > 0 or item.saf_id in self._answered_unsettled)
            await self.journal.append_message(
                txn_id=item.txn_id, direction=Direction.OUT, connector=item.connector, mti=message["t"],
                fields=mask_message(message, bank.profile.dialect),
            )
        except Exception as e:  # never handed to the mux: the STAN is still ours to give back
            bank.release_stan(message["11"] if message is not None else stan)
            await self._retry_later(bank, item, "not_sent", error=f"not sent: {_describe(e)}")
            return True
        self.metrics.sent.labels(item.connector, item.kind.value, message["t"]).inc()
        try:  # from here the mux owns the STAN: it gives it back, at once or after the late window
            response = await bank.request(message, timeout=options.response_timeout)
        except MuxError as e:
            if not e.written:
                log.info("saf_not_sent", connector=item.connector, saf_id=item.saf_id, detail=e.detail)
                return False
            await self._retry_later(bank, item, "no_answer", error=_describe(e))
            return True
        except Exception as e:
            await self._retry_later(bank, item, "not_sent", error=f"not sent: {_describe(e)}")
            return True
        self.journal.append_message(
            txn_id=item.txn_id, direction=Direction.IN, connector=item.connector, mti=response["t"],
            fields=mask_message(response, bank.profile.dialect),
        )
        answer = bank.plugin.read_response(message, response, bank.profile.responses)
        code = answer.response_code
        if code is None or answer.uncertain:
            await self._retry_later(bank, item, "unreadable_answer", error=f"answer not believed: {answer.reason}")
            return True
        if answer.retryable:
            await self._retry_later(bank, item, "retryable", response_code=code)
            return True
        try:
            await self.settle(item, response)  # completes the item in the commit of its outcome (`acknowledged`)
        except Exception as e:  # queued still, unless that commit happened: it goes again, as a repeat
            self._answered_unsettled.add(item.saf_id)
            await self._retry_later(bank, item, "unsettled", error=f"answered {code}; outcome not journalled: "
                                                                   f"{_describe(e)}")
            return True
        self._answered_unsettled.discard(item.saf_id)
        self.metrics.acknowledged.labels(item.connector, item.kind.value).inc()
        return True

    async def settle_reversal(self, item: SafItem, response: Message) -> None:
        await self.mark_reversed(item, response.get("39", ""))

    async def _retry_later(self, bank: Any, item: SafItem, cause: str, **outcome: Any) -> None:
        options: SafOptions = bank.saf
        delay = options.delay_after(item.attempts + 1)
        due = utc_from_seconds(self.clock.seconds()) + timedelta(seconds=delay)
        self.metrics.failed.labels(item.connector, item.kind.value, cause).inc()
        updated = await self.journal.saf_record_attempt(item.saf_id, next_due_at=due, **outcome)
        if not self._stopped:
            self.clock.callLater(delay, self.kick, item.connector)
        log.warning("saf_attempt_failed", connector=item.connector, saf_id=item.saf_id, txn_id=item.txn_id,
                    attempts=updated.attempts, state=updated.state.value, cause=cause, **outcome)

    async def complete_alone(self, item: SafItem, code: str) -> None:
        """Complete an acknowledged item whose transaction had its outcome already (its settling transition
        was refused, and with it the item's completion)."""
        if item.state is not SafState.DONE:
            await self.journal.saf_complete(item.saf_id, response_code=code)

    async def mark_reversed(self, item: SafItem, code: str) -> None:
        """The transaction is reversed: journal it with a notification for the web tier."""
        event = EventDraft("payment.reversed" if item.kind is SafKind.REVERSAL else "payment.voided",
                           {"txn_id": item.txn_id, "reversal_response_code": code})
        try:
            await self.journal.transition(
                item.txn_id, expected_from=REVERSIBLE,
                to=Status.REVERSED if item.kind is SafKind.REVERSAL else Status.VOIDED,
                forget_card=True, event=event, acknowledged=acknowledged(item, code),
            )
        except TransitionRefused as e:
            log.info("saf_reversal_already_recorded", txn_id=item.txn_id, detail=str(e))
            await self.complete_alone(item, code)
        log.info("saf_acknowledged", connector=item.connector, txn_id=item.txn_id, kind=item.kind.value,
                 response_code=code)


def acknowledged(item: SafItem, code: str) -> SafAcknowledged | None:
    """What completes ``item`` in the commit of the outcome its answer settles; None for an item completed
    already (acknowledged by a run that crashed before settling it: recovery settles it)."""
    return None if item.state is SafState.DONE else SafAcknowledged(item.saf_id, code)


def _describe(error: Exception) -> str:
    """An exception as a line for the journal and logs: never a card number, never too long."""
    text = f"{type(error).__name__}: {error}"
    if looks_like_pan(text):
        return f"{type(error).__name__} (detail withheld: it may hold card data)"
    return text[:300]
