"""The journal's asynchronous API: what the rest of the switch calls.

Every method returns a Deferred and never blocks the reactor: writes go to the
group-commit writer and fire only once durable, reads go to the reader pool.
Input is validated on the caller's thread, so a bad value fails at once (as a
failed Deferred) without reaching the database; clear PANs are masked, hashed and
sealed here and never travel to a journal thread.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, Unpack

import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from twisted.internet import defer

from switch.domain.carddata import CardData
from switch.domain.events import Event
from switch.domain.status import Status
from switch.journal import cards, counters, events, lease, operations, saf_queue, schema, store
from switch.journal.config import JournalConfig
from switch.journal.db import Db
from switch.journal.errors import InvalidRecord, JournalError, TransactionNotFound
from switch.journal.guard import dump_fields
from switch.journal.ids import new_txn_id
from switch.journal.metrics import JournalMetrics
from switch.journal.models import (
    Direction,
    EncryptedCard,
    EventDraft,
    MessageRecord,
    NewTransaction,
    SafDraft,
    SafItem,
    SafState,
    SafStats,
    Transaction,
    TransitionRecord,
    TxnChanges,
    prepare_changes,
    require_enum,
    require_id,
    require_mti,
    require_response_code,
    require_text,
    to_us,
    utc_from_seconds,
)
from switch.journal.postgres import PostgresBackend
from switch.journal.readers import ReaderPool
from switch.journal.sqlite import SQLiteBackend
from switch.journal.vault import PanVault
from switch.journal.writer import GroupCommitWriter

log = structlog.get_logger("kswitch.journal")

P = ParamSpec("P")
T = TypeVar("T")


class Backend(Protocol):
    name: str

    def describe(self) -> str: ...

    def open_writer(self) -> Db: ...

    def open_reader(self) -> Db: ...


def _deferred(method: Callable[P, defer.Deferred[T]]) -> Callable[P, defer.Deferred[T]]:
    """An error raised while validating input becomes a failed Deferred, like any other failure."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> defer.Deferred[T]:
        try:
            return method(*args, **kwargs)
        except Exception:
            return defer.fail()

    return wrapper


class Journal:
    """Durable record of transactions, messages, store-and-forward items and events.

    Build it with `open_journal`. One Journal (one writer) per database: event ids
    and SAF order rely on a single writer.
    """

    def __init__(
        self,
        reactor: Any,
        backend: Backend,
        vault: PanVault,
        *,
        config: JournalConfig,
        metrics: JournalMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reactor = reactor
        self._backend = backend
        self._vault = vault
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._writer = GroupCommitWriter(
            reactor,
            backend.open_writer,
            metrics=metrics,
            backend=backend.name,
            max_batch=config.max_batch,
            max_queue=config.max_queue,
        )
        self._readers = ReaderPool(reactor, backend.open_reader, size=config.reader_threads, backend=backend.name)
        self._shutdown_trigger: object | None = None

    @property
    def vault(self) -> PanVault:
        return self._vault

    @property
    def metrics(self) -> JournalMetrics:
        return self._metrics

    def start(self) -> defer.Deferred[Journal]:
        """Open the database, migrate it, and start the writer and readers; fires with the journal."""
        return defer.ensureDeferred(self._start())

    async def _start(self) -> Journal:
        result = await self._writer.start(schema.migrate)
        self._readers.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger("before", "shutdown", self.close)
        log.info(
            "journal_opened",
            backend=self._backend.describe(),
            schema_from=result.from_version,
            schema_to=result.to_version,
        )
        return self

    def close(self) -> defer.Deferred[None]:
        """Commit queued writes, then stop the threads and close every connection."""
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        return self._writer.stop().addCallback(lambda _: self._readers.stop())

    # Transactions

    @_deferred
    def create_transaction(
        self,
        new: NewTransaction,
        *,
        event: EventDraft | None = None,
        request: tuple[str, Mapping[str, Any]] | None = None,
    ) -> defer.Deferred[Transaction]:
        """Record a new transaction (and optionally its first notification) atomically.

        ``request`` is the (MTI, masked fields) of the message about to be sent to the
        bank: written in the same database transaction, so crash recovery never finds
        a transaction without the request it must reverse.

        Fails with `DuplicateIdempotencyKey` when the merchant's key is already bound,
        `TransactionExists` for a reused txn_id, `TransactionNotFound` for a missing parent.
        """
        now = self._now()
        row = self._transaction_row(new, now)
        payload = _payload(event)
        cutoff = now - _us(self._config.idempotency_ttl)
        message = None
        if request is not None:
            message = self._message_row(new.txn_id, Direction.OUT, new.connector, request[0], request[1], None)

        def unit(db: Db) -> Transaction:
            txn = store.create_transaction(db, row, idempotency_cutoff=cutoff)
            self._append_event(db, txn, event, payload, now)
            if message is not None:
                store.append_message(db, {**message, "txn_id": txn.txn_id})
            return txn

        return self._writer.submit(unit)

    @_deferred
    def transition(
        self,
        txn_id: str,
        *,
        expected_from: Iterable[Status],
        to: Status,
        expected_version: int | None = None,
        forget_card: bool = False,
        event: EventDraft | None = None,
        saf: SafDraft | None = None,
        **changes: Unpack[TxnChanges],
    ) -> defer.Deferred[Transaction]:
        """Move a transaction to ``to`` only if it is in one of ``expected_from`` (compare-and-set).

        Fails with `TransitionRefused` naming the current status otherwise. The new
        status, ``changes``, a transitions row, and the optional event and SAF item
        are written in one database transaction. ``forget_card`` deletes the stored
        PAN ciphertext once no later message will need it.
        """
        statuses = (expected_from,) if isinstance(expected_from, str) else expected_from
        expected = frozenset(require_enum(Status, status, "expected_from") for status in statuses)
        if not expected:
            raise InvalidRecord("expected_from must name at least one status")
        target = require_enum(Status, to, "to")
        prepared = prepare_changes(changes)
        now = self._now()
        payload = _payload(event)
        saf_row = self._saf_row(txn_id, saf, now) if saf is not None else None

        def unit(db: Db) -> Transaction:
            txn = store.transition(
                db,
                txn_id,
                expected_from=expected,
                to=target,
                changes=prepared,
                expected_version=expected_version,
                forget_card=forget_card,
                now=now,
            )
            self._append_event(db, txn, event, payload, now)
            if saf_row is not None:
                saf_queue.enqueue(db, saf_row)
            return txn

        return self._writer.submit(unit)

    @_deferred
    def begin_operation(
        self,
        parent_id: str,
        child: NewTransaction,
        *,
        allowed: Iterable[Status],
        request: tuple[str, Mapping[str, Any]] | None = None,
        saf: SafDraft | None = None,
        event: EventDraft | None = None,
    ) -> defer.Deferred[tuple[Transaction, Transaction]]:
        """Start a capture, refund or void of ``parent_id`` in ONE database transaction.

        Checks the parent is in one of ``allowed`` with enough left for ``child.amount``,
        reserves it (see `switch.journal.operations`), inserts the child (binding its
        idempotency key) and its outgoing ``request`` (MTI, masked fields), and queues
        ``saf`` for the child (``event`` is the parent's). Fires with (parent, child); fails with `ReservationRefused`
        (nothing written), `DuplicateIdempotencyKey` or `TransactionNotFound`.
        """
        require_id("parent_id", parent_id)
        if child.parent_txn_id != parent_id:
            raise InvalidRecord("the child of an operation must name its parent in parent_txn_id")
        states = frozenset(require_enum(Status, status, "allowed") for status in allowed)
        if not states:
            raise InvalidRecord("allowed must name at least one parent status")
        now = self._now()
        row = self._transaction_row(child, now)
        txn_id = str(row["txn_id"])
        cutoff = now - _us(self._config.idempotency_ttl)
        message = None
        if request is not None:
            message = self._message_row(txn_id, Direction.OUT, child.connector, request[0], request[1], None)
        saf_row = self._saf_row(txn_id, saf, now) if saf is not None else None
        payload = _payload(event)

        def unit(db: Db) -> tuple[Transaction, Transaction]:
            parent = operations.reserve(db, parent_id, child.kind, child.amount, states, now)
            created = store.create_transaction(db, row, idempotency_cutoff=cutoff)
            if message is not None:
                store.append_message(db, message)
            if saf_row is not None:
                saf_queue.enqueue(db, saf_row)
            self._append_event(db, parent, event, payload, now)
            return parent, created

        return self._writer.submit(unit)

    @_deferred
    def finish_operation(
        self,
        child_id: str,
        *,
        to: Status,
        expected_from: Iterable[Status] = (Status.PENDING,),
        forget_card: bool = False,
        event: EventDraft | None = None,
        saf: SafDraft | None = None,
        **changes: Unpack[TxnChanges],
    ) -> defer.Deferred[tuple[Transaction, Transaction]]:
        """Record an operation's outcome and its parent's totals and status in ONE database transaction.

        The child moves to ``to`` (compare-and-set, as `transition`); approved settles its
        reservation into the parent (captured, refunded, voided), declined/failed/reversed
        releases it, pending/timeout keeps it (``saf`` then queues the repeat or reversal
        that will resolve it, in the same commit; ``event`` is the parent's). Fires with (parent, child).
        """
        statuses = (expected_from,) if isinstance(expected_from, str) else expected_from
        expected = frozenset(require_enum(Status, status, "expected_from") for status in statuses)
        if not expected:
            raise InvalidRecord("expected_from must name at least one status")
        target = require_enum(Status, to, "to")
        prepared = prepare_changes(changes)
        now = self._now()
        payload = _payload(event)
        saf_row = self._saf_row(child_id, saf, now) if saf is not None else None

        def unit(db: Db) -> tuple[Transaction, Transaction]:
            child = store.transition(db, child_id, expected_from=expected, to=target, changes=prepared,
                                     expected_version=None, forget_card=forget_card, now=now)
            if child.parent_txn_id is None:
                raise InvalidRecord(f"transaction {child_id} is not an operation on a payment")
            parent = operations.settle(db, child, now) or store.get_transaction(db, child.parent_txn_id)
            if parent is None:
                raise TransactionNotFound(child.parent_txn_id)
            if saf_row is not None:
                saf_queue.enqueue(db, saf_row)
            self._append_event(db, parent, event, payload, now)
            return parent, child

        return self._writer.submit(unit)

    def saf_items(self, txn_id: str) -> defer.Deferred[list[SafItem]]:
        """Every store-and-forward item of one transaction, oldest first, whatever its state."""
        return self._readers.read(lambda db: saf_queue.items_of(db, txn_id))

    def get_transaction(self, txn_id: str) -> defer.Deferred[Transaction]:
        """The transaction, or a `TransactionNotFound` failure."""

        def work(db: Db) -> Transaction:
            txn = store.get_transaction(db, txn_id)
            if txn is None:
                raise TransactionNotFound(txn_id)
            return txn

        return self._readers.read(work)

    def find_by_order(self, merchant_id: str, order_id: str) -> defer.Deferred[list[Transaction]]:
        return self._readers.read(lambda db: store.find_by_order(db, merchant_id, order_id))

    def find_by_idempotency_key(self, merchant_id: str, idempotency_key: str) -> defer.Deferred[Transaction | None]:
        """The transaction the key is bound to while the binding is live (``idempotency_ttl``)."""
        cutoff = self._now() - _us(self._config.idempotency_ttl)
        return self._readers.read(lambda db: store.find_by_idempotency_key(db, merchant_id, idempotency_key, cutoff))

    @_deferred
    def find_by_stan(self, connector: str, stan: str, *, since: datetime) -> defer.Deferred[list[Transaction]]:
        """Candidates for a bank message carrying this STAN (late responses, reversals)."""
        start = to_us(since)
        return self._readers.read(lambda db: store.find_by_stan(db, connector, stan, start))

    def find_sent(
        self, connector: str, stan: str, *, transmission_datetime: str | None = None, rrn: str | None = None
    ) -> defer.Deferred[list[Transaction]]:
        """Transactions sent with this STAN (and field 7 / field 37 when given): late-answer matching."""
        return self._readers.read(lambda db: store.find_sent(db, connector, stan, transmission_datetime, rrn))

    @_deferred
    def find_by_pan(
        self, card: CardData, *, since: datetime, merchant_id: str | None = None, limit: int = 100
    ) -> defer.Deferred[list[Transaction]]:
        """Transactions with the same card (by keyed hash), newest first: duplicate checks, look-ups."""
        pan_hash = self._vault.pan_hash(card.pan)
        start = to_us(since)
        return self._readers.read(lambda db: store.find_by_pan_hash(db, pan_hash, merchant_id, start, limit))

    def children(self, txn_id: str) -> defer.Deferred[list[Transaction]]:
        """Captures, voids, refunds and reversals pointing at ``txn_id``."""
        return self._readers.read(lambda db: store.children(db, txn_id))

    def in_flight(self, limit: int = 10_000) -> defer.Deferred[list[Transaction]]:
        """Transactions left pending, timed out or awaiting reversal: crash recovery resumes each one."""
        return self._readers.read(lambda db: store.in_flight(db, limit))

    def transitions(self, txn_id: str) -> defer.Deferred[list[TransitionRecord]]:
        return self._readers.read(lambda db: store.transitions(db, txn_id))

    def reveal_card(self, card: EncryptedCard) -> CardData:
        """Decrypt a stored PAN for the message that needs it; keep the result in memory only."""
        return self._vault.open(card)

    # Messages

    @_deferred
    def append_message(
        self,
        *,
        txn_id: str | None,
        direction: Direction,
        connector: str,
        mti: str,
        fields: Mapping[str, Any],
        at: datetime | None = None,
    ) -> defer.Deferred[int]:
        """Record a message exchanged with a bank; ``fields`` must already be masked (`switch.iso.masking`).

        STAN and response code are taken from fields 11 and 39. Fires with the message id.
        """
        row = self._message_row(txn_id, direction, connector, mti, fields, at)
        return self._writer.submit(lambda db: store.append_message(db, row))

    def _message_row(
        self, txn_id: str | None, direction: Direction, connector: str, mti: str, fields: Mapping[str, Any],
        at: datetime | None,
    ) -> dict[str, Any]:
        return {
            "txn_id": require_id("txn_id", txn_id) if txn_id is not None else None,
            "direction": require_enum(Direction, direction, "direction"),
            "connector": require_id("connector", connector),
            "mti": require_mti(mti),
            "stan": _field(fields, "11"),
            "response_code": _field(fields, "39"),
            "fields": dump_fields("fields", fields),
            "at": to_us(at) if at is not None else self._now(),
        }

    def messages(self, txn_id: str) -> defer.Deferred[list[MessageRecord]]:
        return self._readers.read(lambda db: store.messages(db, txn_id))

    # Store-and-forward

    @_deferred
    def saf_enqueue(self, txn_id: str, draft: SafDraft) -> defer.Deferred[SafItem]:
        """Queue a reversal, void or advice; an item already queued or dead for (txn_id, kind) is returned instead."""
        row = self._saf_row(txn_id, draft, self._now())
        return self._writer.submit(lambda db: saf_queue.enqueue(db, row))

    def saf_head(self, connector: str) -> defer.Deferred[SafItem | None]:
        """The oldest queued item of this connector, due or not."""
        return self._readers.read(lambda db: saf_queue.head(db, connector))

    @_deferred
    def saf_ready(self, connector: str, *, due_by: datetime, limit: int) -> defer.Deferred[list[SafItem]]:
        """Up to ``limit`` items of ``connector`` that may be sent now: due by ``due_by``, and with
        no earlier item of the same payment (transaction or its parent) still queued. Oldest first."""
        due = to_us(due_by)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidRecord(f"limit must be a positive int, got {limit!r}")
        return self._readers.read(lambda db: saf_queue.ready(db, connector, due, limit))

    def saf_get(self, saf_id: int) -> defer.Deferred[SafItem]:
        return self._readers.read(lambda db: saf_queue.get(db, saf_id))

    @_deferred
    def saf_record_attempt(
        self,
        saf_id: int,
        *,
        next_due_at: datetime,
        response_code: str | None = None,
        error: str | None = None,
    ) -> defer.Deferred[SafItem]:
        """Count an attempt that did not complete the item: a send without a final answer
        (``response_code`` for a retryable one), or a failure before the write (``error``: the
        message could not be built, encoded or journalled). At ``max_attempts`` the item is
        dead-lettered, with a ``saf.dead_letter`` event in the same transaction.
        """
        due = to_us(next_due_at)
        text = require_text("error", error, 500) if error is not None else None
        code = require_response_code(response_code) if response_code is not None else None
        now = self._now()
        recorded = self._writer.submit(
            lambda db: saf_queue.record_attempt(db, saf_id, now=now, next_due=due, response_code=code, error=text)
        )
        return recorded.addCallback(_log_dead_letter)

    @_deferred
    def saf_complete(self, saf_id: int, *, response_code: str) -> defer.Deferred[SafItem]:
        """The bank acknowledged the item with ``response_code``."""
        code = require_response_code(response_code)
        now = self._now()
        return self._writer.submit(lambda db: saf_queue.complete(db, saf_id, now=now, response_code=code))

    @_deferred
    def saf_retry(self, saf_id: int, *, operator: str) -> defer.Deferred[SafItem]:
        """Operator action: a dead item goes back to its place in the queue with its attempts reset."""
        who = require_text("operator", operator, 100)
        now = self._now()
        return self._writer.submit(lambda db: saf_queue.retry(db, saf_id, now=now, operator=who))

    @_deferred
    def saf_drop(self, saf_id: int, *, operator: str, reason: str) -> defer.Deferred[SafItem]:
        """Operator action: give up on an item; it is kept as ``dropped`` with who and why."""
        who = require_text("operator", operator, 100)
        why = require_text("reason", reason, 500)
        now = self._now()
        return self._writer.submit(lambda db: saf_queue.drop(db, saf_id, now=now, operator=who, reason=why))

    @_deferred
    def saf_list(
        self,
        *,
        connector: str | None = None,
        states: Collection[SafState] = (SafState.DEAD,),
        limit: int = 100,
    ) -> defer.Deferred[list[SafItem]]:
        """Items in the given states (dead letters by default), for operators."""
        wanted = frozenset(require_enum(SafState, state, "states") for state in states)
        if not wanted:
            raise InvalidRecord("states must name at least one SAF state")
        return self._readers.read(lambda db: saf_queue.list_items(db, connector, wanted, limit))

    def saf_stats(self) -> defer.Deferred[list[SafStats]]:
        """Depth, oldest item and dead letters per connector with anything queued or dead."""
        return self._readers.read(saf_queue.stats)

    def refresh_saf_metrics(self) -> defer.Deferred[list[SafStats]]:
        """Read `saf_stats` and publish it as the kswitch_saf_* gauges; call it periodically."""

        def publish(stats: list[SafStats]) -> list[SafStats]:
            self._metrics.set_saf(stats, utc_from_seconds(self._clock()))
            return stats

        return self.saf_stats().addCallback(publish)

    # Events

    @_deferred
    def append_event(self, merchant_id: str, event: EventDraft, *, txn_id: str | None = None) -> defer.Deferred[Event]:
        """Append a notification on its own; prefer passing ``event=`` to a state change for atomicity."""
        require_id("merchant_id", merchant_id)
        payload = dump_fields("payload", event.payload)
        now = self._now()
        return self._writer.submit(
            lambda db: events.append(
                db, merchant_id=merchant_id, txn_id=txn_id, type=event.type, payload=payload, now=now
            )
        )

    @_deferred
    def events_after(
        self, merchant_ids: Sequence[str], after_event_id: int = 0, *, limit: int = 500
    ) -> defer.Deferred[list[Event]]:
        """Events of these merchants with ids above ``after_event_id``, in id order."""
        merchants = _merchants(merchant_ids)
        return self._readers.read(lambda db: events.after(db, merchants, after_event_id, limit))

    @_deferred
    def unacknowledged_events(
        self, client_id: str, merchant_ids: Sequence[str], after_event_id: int = 0, *, limit: int = 500
    ) -> defer.Deferred[list[Event]]:
        """Events of these merchants the client has not acknowledged, in id order."""
        merchants = _merchants(merchant_ids)
        return self._readers.read(
            lambda db: events.unacknowledged(db, client_id, merchants, after_event_id, limit)
        )

    @_deferred
    def acknowledge_events(self, client_id: str, event_ids: Iterable[int]) -> defer.Deferred[int]:
        """Record that the client has the events; fires with how many were newly acknowledged."""
        require_id("client_id", client_id)
        ids = sorted({_event_id(event_id) for event_id in event_ids})
        if not ids:
            return defer.succeed(0)
        now = self._now()
        return self._writer.submit(lambda db: events.acknowledge(db, client_id, ids, now))

    # Housekeeping

    def purge_idempotency_keys(self) -> defer.Deferred[int]:
        """Release idempotency keys older than ``idempotency_ttl``; fires with how many."""
        cutoff = self._now() - _us(self._config.idempotency_ttl)
        return self._writer.submit(lambda db: store.purge_idempotency_keys(db, cutoff))

    def key_usage(self) -> defer.Deferred[Mapping[str, int]]:
        """Stored PAN ciphertexts per key id: a retired key can leave the ring once it reads 0."""
        return self._readers.read(cards.key_usage)

    def rewrap_cards(self, batch: int = 500) -> defer.Deferred[int]:
        """Re-encrypt every stored PAN under the current key with AES-GCM-SIV, a batch at a time; fires
        with the count.

        Run it after adding a new current key; once `key_usage` shows an old key at 0
        that key can leave the ring.
        """
        return defer.ensureDeferred(self._rewrap_cards(batch))

    async def _rewrap_cards(self, batch: int) -> int:
        current = self._vault.current_key_id
        total = 0
        for spec in cards.CARD_TABLES:
            while stale := await self._readers.read(
                functools.partial(cards.stale_cards, spec=spec, current_key_id=current, limit=batch)
            ):
                items = [(row_id, old, self._vault.seal(self._vault.open(old), old.context)) for row_id, old in stale]
                total += await self._writer.submit(functools.partial(cards.reseal_many, spec=spec, items=items))
        log.info("journal_cards_rewrapped", count=total, key_id=current)
        return total

    # One node per journal, persisted counters

    def acquire_lease(self, me: lease.LeaseHolder, seconds: float) -> defer.Deferred[lease.Taken]:
        """Take the journal's node lease for ``seconds`` (`lease.LeaseHeld` if a live node has it)."""
        now, ttl = self._now(), int(seconds * 1_000_000)
        return self._writer.submit(lambda db: lease.acquire(db, me, now=now, ttl=ttl))

    def renew_lease(self, owner: str, seconds: float) -> defer.Deferred[None]:
        now, ttl = self._now(), int(seconds * 1_000_000)
        return self._writer.submit(lambda db: lease.renew(db, owner, now=now, ttl=ttl))

    def release_lease(self, owner: str) -> defer.Deferred[bool]:
        return self._writer.submit(lambda db: lease.release(db, owner))

    def reserve_numbers(self, name: str, count: int) -> defer.Deferred[int]:
        """Durably take ``count`` numbers of counter ``name``; fires with the first (see `counters`)."""
        return self._writer.submit(lambda db: counters.reserve(db, name, count))

    # Helpers

    def _now(self) -> int:
        return int(self._clock() * 1_000_000)

    def _transaction_row(self, new: NewTransaction, now: int) -> dict[str, object]:
        txn_id = new.txn_id or new_txn_id()
        card = new.card
        sealed = self._vault.seal(card, cards.transaction_context(txn_id)) if card and new.retain_card else None
        return {
            "txn_id": txn_id,
            "kind": new.kind,
            "parent_txn_id": new.parent_txn_id,
            "merchant_id": new.merchant_id,
            "store_id": new.store_id,
            "order_id": new.order_id,
            "connector": new.connector,
            "status": new.status,
            "version": 1,
            "amount": new.amount,
            "currency": new.currency,
            "amount_authorized": 0,
            "amount_captured": 0,
            "amount_refunded": 0,
            "rrn": new.rrn,
            "auth_code": None,
            "response_code": None,
            "reason": new.reason,
            "masked_pan": card.masked if card else None,
            "pan_hash": self._vault.pan_hash(card.pan) if card else None,
            **cards.card_columns(sealed),
            "stan": new.stan,
            "transmission_datetime": new.transmission_datetime,
            "sent_at": None,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "created_at": now,
            "updated_at": now,
            "amount_capture_pending": 0,
            "amount_refund_pending": 0,
        }

    def _saf_row(self, txn_id: str, draft: SafDraft, now: int) -> dict[str, object]:
        require_id("txn_id", txn_id)
        sealed = self._vault.seal(draft.card, cards.saf_context(txn_id)) if draft.card else None
        return {
            "connector": draft.connector,
            "txn_id": txn_id,
            "kind": draft.kind,
            "mti": draft.mti,
            "fields": dump_fields("fields", draft.fields),
            **cards.card_columns(sealed),
            "max_attempts": draft.max_attempts,
            "now": now,
            "due": to_us(draft.due_at) if draft.due_at is not None else now,
        }

    @staticmethod
    def _append_event(db: Db, txn: Transaction, event: EventDraft | None, payload: str | None, now: int) -> None:
        if event is not None and payload is not None:
            events.append(db, merchant_id=txn.merchant_id, txn_id=txn.txn_id, type=event.type, payload=payload, now=now)


def _log_dead_letter(item: SafItem) -> SafItem:
    if item.state is SafState.DEAD:
        log.warning(
            "saf_dead_letter",
            saf_id=item.saf_id,
            connector=item.connector,
            txn_id=item.txn_id,
            kind=item.kind.value,
            attempts=item.attempts,
            last_response_code=item.last_response_code,
        )
    return item


def _payload(event: EventDraft | None) -> str | None:
    return dump_fields("payload", event.payload) if event is not None else None


def _field(fields: Mapping[Any, Any], number: str) -> str | None:
    value = fields.get(number, fields.get(int(number)))
    return str(value) if value is not None else None


def _merchants(merchant_ids: Sequence[str]) -> list[str]:
    if isinstance(merchant_ids, str):
        raise InvalidRecord("merchant_ids must be a list of merchant ids, not one string")
    merchants = sorted({require_id("merchant_id", merchant) for merchant in merchant_ids})
    if not merchants:
        raise InvalidRecord("give at least one merchant id")
    return merchants


def _event_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRecord(f"event ids are positive ints, got {type(value).__name__}")
    return value


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def backend_for(config: JournalConfig) -> Backend:
    if config.backend == "postgresql":
        return PostgresBackend(config.pg_dsn, config.pg_schema)
    return SQLiteBackend(config.sqlite_path)


def open_journal(
    config: JournalConfig,
    reactor: Any,
    *,
    registry: CollectorRegistry = REGISTRY,
    clock: Callable[[], float] = time.time,
) -> defer.Deferred[Journal]:
    """Load the keys, open (and migrate) the configured database, start the threads.

    Key or configuration errors fail the Deferred with `KeyConfigError`; a database
    from a newer kswitch with `SchemaTooNew`.
    """
    try:
        vault = PanVault.from_config(config)
        backend = backend_for(config)
    except JournalError:
        return defer.fail()
    journal = Journal(reactor, backend, vault, config=config, metrics=JournalMetrics.on(registry), clock=clock)
    return journal.start()
