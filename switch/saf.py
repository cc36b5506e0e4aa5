"""Store-and-forward: reversals (and voids) delivered until the bank acknowledges them.

Items live in the journal, so they survive restarts.  Each connector's queue is sent
strictly in order, one item at a time: a bank that sees a void before the reversal of
an earlier payment can mismatch them.  The first send uses the reversal MTI (0400 or
0420); every later one the repeat MTI (0401/0421), so the bank can tell a repeat from
a new reversal.  A send that gets no final answer is counted; after ``max_attempts``
the item is dead-lettered (visible in metrics, an event, and ``kswitch saf list``),
never dropped silently.  Nothing is counted while no link is ready: an attempt is
something the bank could have seen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from switch.dialect import Message
from switch.journal import Journal
from switch.journal.errors import TransitionRefused
from switch.journal.models import Direction, EventDraft, SafItem, SafKind, Status, utc_from_seconds
from switch.masking import mask_message
from switch.metrics import MetricBundle
from switch.mux import MuxError
from switch.translate import reversal_request

log = structlog.get_logger("kswitch.saf")

# A transaction whose reversal the bank acknowledged ends here, whatever it was before.
REVERSIBLE = (Status.PENDING, Status.TIMEOUT, Status.REVERSAL_PENDING, Status.APPROVED)


@dataclass(frozen=True)
class SafOptions:
    """Per-connector store-and-forward settings. Defaults:

    - ``retry_interval`` 30 s before the first repeat, multiplied by ``backoff`` (2.0) each
      time up to ``max_interval`` (600 s);
    - ``max_attempts`` 10 sends without a final answer, then dead letter;
    - ``response_timeout`` None = the connector's request timeout.
    """

    retry_interval: float = 30.0
    backoff: float = 2.0
    max_interval: float = 600.0
    max_attempts: int = 10
    response_timeout: float | None = None

    def delay_after(self, attempts: int) -> float:
        return min(self.retry_interval * self.backoff ** max(attempts - 1, 0), self.max_interval)


class SafMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.sent = Counter("kswitch_saf_sent_total", "Store-and-forward sends, by connector, kind and MTI",
                            ["connector", "kind", "mti"], registry=registry)
        self.acknowledged = Counter("kswitch_saf_acknowledged_total", "Store-and-forward items the bank acknowledged",
                                    ["connector", "kind"], registry=registry)


class StoreAndForward:
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
        self._busy: set[str] = set()
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self._poll_interval = poll_interval
        self._stopped = False
        self._waiters: dict[str, list[Deferred[Any]]] = {}
        self.build: Callable[[Any, SafItem, str, bool], Message] = self.build_reversal
        """Builds the message for one send of an item (bank, item, new STAN, repeat?); the
        transaction engine replaces it so every message class and plugin is served."""
        self.settle: Callable[[SafItem, Message], Awaitable[None]] = self.settle_reversal
        """Records what a final answer to an item means for its transaction (set by the engine)."""

    def start(self) -> None:
        self._loop.start(self._poll_interval, now=True).addErrback(
            lambda f: log.failure("saf_loop_failed", failure=f)
        )

    def stop(self) -> None:
        self._stopped = True
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> Deferred[None]:
        """Send the due head item of every connector that has a ready link and nothing in flight."""
        return ensureDeferred(self._poll())

    async def _poll(self) -> None:
        heads = await self.journal.saf_heads(due_by=utc_from_seconds(self.clock.seconds()))
        for item in heads:
            bank = self.banks.get(item.connector)
            if bank is None or not bank.ready or item.connector in self._busy or self._stopped:
                continue
            self._busy.add(item.connector)
            ensureDeferred(self._deliver(bank, item)).addErrback(
                lambda f, c=item.connector: log.error("saf_delivery_failed", connector=c, error=f.getErrorMessage())
            )
        await self.journal.refresh_saf_metrics()

    def completion(self, txn_id: str) -> Deferred[Any]:
        """Fires with the transaction once the bank acknowledges its reversal or void."""
        waiters = self._waiters.setdefault(txn_id, [])

        def cancel(d: Deferred[Any]) -> None:
            if d in waiters:
                waiters.remove(d)

        d: Deferred[Any] = Deferred(cancel)
        waiters.append(d)
        return d

    def kick(self, connector: str) -> None:
        """Try at once (after an enqueue) rather than at the next poll."""
        if connector not in self._busy and not self._stopped:
            self.poll()

    async def _deliver(self, bank: Any, item: SafItem) -> None:
        try:
            await self._send(bank, item)
        finally:
            self._busy.discard(item.connector)
        self.kick(item.connector)  # the next item, if due, goes now rather than at the next poll

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

    async def _send(self, bank: Any, item: SafItem) -> None:
        options: SafOptions = bank.saf
        stan = bank.reserve_stan()
        try:
            message = self.build(bank, item, stan, item.attempts > 0)
        except BaseException:
            bank.release_stan(stan)
            raise
        self.metrics.sent.labels(item.connector, item.kind.value, message["t"]).inc()
        self.journal.append_message(
            txn_id=item.txn_id, direction=Direction.OUT, connector=item.connector, mti=message["t"],
            fields=mask_message(message, bank.profile.dialect),
        )
        try:
            response = await bank.request(message, timeout=options.response_timeout)
        except MuxError as e:
            if not e.written:  # the mux gave the STAN back already
                return
            await self._retry_later(item, options, error=f"{type(e).__name__}: {e}")
            return
        self.journal.append_message(
            txn_id=item.txn_id, direction=Direction.IN, connector=item.connector, mti=response["t"],
            fields=mask_message(response, bank.profile.dialect),
        )
        code = response.get("39", "")
        if bank.profile.responses.outcome(code).retryable:
            await self._retry_later(item, options, response_code=code)
            return
        await self.journal.saf_complete(item.saf_id, response_code=code)
        self.metrics.acknowledged.labels(item.connector, item.kind.value).inc()
        await self.settle(item, response)

    async def settle_reversal(self, item: SafItem, response: Message) -> None:
        await self.mark_reversed(item, response.get("39", ""))

    async def _retry_later(self, item: SafItem, options: SafOptions, **outcome: Any) -> None:
        delay = options.delay_after(item.attempts + 1)
        due = utc_from_seconds(self.clock.seconds()) + timedelta(seconds=delay)
        updated = await self.journal.saf_record_attempt(item.saf_id, next_due_at=due, **outcome)
        if not self._stopped:
            self.clock.callLater(delay, self.kick, item.connector)
        log.warning("saf_attempt_failed", connector=item.connector, txn_id=item.txn_id, attempts=updated.attempts,
                    state=updated.state.value, **outcome)

    async def mark_reversed(self, item: SafItem, code: str) -> None:
        """The transaction is reversed: journal it with a notification for the web tier."""
        event = EventDraft("payment.reversed" if item.kind is SafKind.REVERSAL else "payment.voided",
                           {"txn_id": item.txn_id, "reversal_response_code": code})
        try:
            txn = await self.journal.transition(
                item.txn_id, expected_from=REVERSIBLE,
                to=Status.REVERSED if item.kind is SafKind.REVERSAL else Status.VOIDED,
                forget_card=True, event=event,
            )
        except TransitionRefused as e:
            log.info("saf_reversal_already_recorded", txn_id=item.txn_id, detail=str(e))
            txn = await self.journal.get_transaction(item.txn_id)
        for waiter in self._waiters.pop(item.txn_id, []):
            waiter.callback(txn)
        log.info("saf_acknowledged", connector=item.connector, txn_id=item.txn_id, kind=item.kind.value,
                 response_code=code)
