"""The journal's asynchronous API: what the rest of the switch calls.

Every method returns a Deferred and never blocks the reactor: writes go to the
group-commit writer and fire only once durable, reads go to the reader pool.
Input is validated on the caller's thread, so a bad value fails at once (as a
failed Deferred) without reaching the database; clear PANs are masked, hashed and
sealed here and never travel to a journal thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, Unpack

from prometheus_client import REGISTRY, CollectorRegistry
from twisted.internet import defer

from switch.domain.carddata import CardData
from switch.domain.status import Status
from switch.journal import cards, feebook, saf_queue, store, txnunits
from switch.journal.base import Backend, fails_as_deferred, microseconds
from switch.journal.calendar import CalendarApi
from switch.journal.config import JournalConfig
from switch.journal.dayend import DayEndApi
from switch.journal.db import Db
from switch.journal.errors import InvalidRecord, JournalError, TransactionNotFound
from switch.journal.eventapi import EventApi
from switch.journal.ids import new_txn_id
from switch.journal.messageapi import MessageApi
from switch.journal.metrics import JournalMetrics
from switch.journal.models import (
    Direction,
    EncryptedCard,
    EventDraft,
    NewTransaction,
    Received,
    SafAcknowledged,
    SafDraft,
    SafItem,
    Transaction,
    TransitionRecord,
    TxnChanges,
    prepare_changes,
    require_enum,
    require_id,
    to_us,
)
from switch.journal.risk import RiskApi, RiskLedger, Screened
from switch.journal.safapi import SafApi
from switch.journal.sqlite import SQLiteBackend
from switch.journal.units import Call
from switch.journal.upkeep import UpkeepApi
from switch.journal.vault import PanVault

S = TypeVar("S", bound=Screened)
R = TypeVar("R")
_Move = tuple[frozenset[Status], Status, dict[str, object], int, txnunits.Announced | None, dict[str, object] | None,
              dict[str, Any] | None]
"""`Journal._move`'s result: expected statuses, target, prepared changes, now, event row, SAF row, answer row."""


class Journal(MessageApi, SafApi, EventApi, UpkeepApi, RiskApi, CalendarApi, DayEndApi):
    """Durable record of transactions, messages, store-and-forward items and events.

    Build it with `open_journal`. One Journal (one writer) per database: event ids
    and SAF order rely on a single writer. Transactions, operations and reads are here;
    messages, store-and-forward, events and upkeep come from the mixins.
    """

    # Transactions

    @fails_as_deferred
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
        announce = txnunits.announced(event)
        cutoff = now - microseconds(self._config.idempotency_ttl)
        message = None
        if request is not None:
            message = self._message_row(new.txn_id, Direction.OUT, new.connector, request[0], request[1], None)
        return self._writer.submit(Call(txnunits.create, row, cutoff, announce, message, now))

    @fails_as_deferred
    def create_screened(
        self, new: NewTransaction, request: tuple[str, Mapping[str, Any]], screen: Callable[[RiskLedger], S],
        refused_reason: str,
    ) -> defer.Deferred[tuple[Transaction | None, S]]:
        """A payment's first commit with its risk screening in it: ``screen`` counts and decides, then, by
        the verdict's ``journal_as``: ``send`` writes the transaction (the decision in its row,
        `ScreeningLedger`) and ``request`` as `create_transaction` does; ``refuse`` writes it declined
        with ``refused_reason``, nothing to send and its card not kept; ``apart`` writes nothing more
        (the decision went into a row of its own; the request must be built again, the caller journals
        it next).  One writer unit: counters, decision and payment commit together, so
        a rejected insert (a duplicate idempotency key) takes its counts back with it. Fires with the declined
        transaction for ``refuse`` (the caller answers from it) and None otherwise, with the verdict: a payment
        sent goes on from what its caller holds, and a transaction not needed does not cross back from a writer
        process."""
        now = self._now()
        row = self._transaction_row(new, now)
        message = self._message_row(new.txn_id, Direction.OUT, new.connector, request[0], request[1], None)
        cutoff = now - microseconds(self._config.idempotency_ttl)
        return self._writer.submit(Call(txnunits.create_screened, row, message, cutoff, screen, refused_reason, now))

    @fails_as_deferred
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
        risk: Callable[[RiskLedger, Transaction], R] | None = None,
        received: Received | None = None,
        acknowledged: SafAcknowledged | None = None,
        **changes: Unpack[TxnChanges],
    ) -> defer.Deferred[Transaction] | defer.Deferred[tuple[Transaction, R]]:
        """Move a transaction to ``to`` only if it is in one of ``expected_from`` (compare-and-set).

        Fails with `TransitionRefused` naming the current status otherwise. The new
        status, ``changes``, a transitions row, and the optional event and SAF item
        are written in one database transaction. ``forget_card`` deletes the stored
        PAN ciphertext once no later message will need it.  ``risk`` runs in the same
        transaction on the moved payment: the risk stage's part of an outcome (counts
        given back, a decline counted); it runs on the writer's copy of it, so what it
        has to tell the caller (the holds it put) is its result: with ``risk`` the
        Deferred fires with (transaction, that result). ``received`` is the bank's answer that decided it,
        journalled in the same commit (on its own if the transition is refused). ``acknowledged`` is the
        store-and-forward item whose answer this settles, completed in the same commit (not if refused).
        """
        expected, target, prepared, now, announce, saf_row, answer = self._move(
            txn_id, expected_from, to, changes, event, saf, received)
        later = (len(expected) == 1 and expected_version is None and event is None and saf is None and risk is None
                 and acknowledged is None and feebook.writes_nothing_after(target, prepared))
        moved = self._writer.submit(Call(
            txnunits.transition, txn_id, expected=expected, target=target, changes=prepared,
            expected_version=expected_version, forget_card=forget_card, event=announce, saf_row=saf_row, risk=risk,
            answer=answer, acknowledged=acknowledged, later=later, now=now))
        return moved if answer is None else moved.addErrback(self._journal_apart, answer)

    @fails_as_deferred
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
        cutoff = now - microseconds(self._config.idempotency_ttl)
        message = None
        if request is not None:
            message = self._message_row(txn_id, Direction.OUT, child.connector, request[0], request[1], None)
        saf_row = self._saf_row(txn_id, saf, now) if saf is not None else None
        return self._writer.submit(Call(
            txnunits.begin_operation, parent_id, kind=child.kind, amount=child.amount, allowed=states, row=row,
            cutoff=cutoff, message=message, saf_row=saf_row, event=txnunits.announced(event), now=now))

    @fails_as_deferred
    def finish_operation(
        self,
        child_id: str,
        *,
        to: Status,
        expected_from: Iterable[Status] = (Status.PENDING,),
        forget_card: bool = False,
        event: EventDraft | None = None,
        saf: SafDraft | None = None,
        received: Received | None = None,
        acknowledged: SafAcknowledged | None = None,
        **changes: Unpack[TxnChanges],
    ) -> defer.Deferred[tuple[Transaction, Transaction]]:
        """Record an operation's outcome, the bank's answer (``received``, as for `transition`) and its
        parent's totals and status in ONE database transaction.

        The child moves to ``to`` (compare-and-set, as `transition`); approved settles its
        reservation into the parent (captured, refunded, voided), declined/failed/reversed
        releases it, pending/timeout keeps it (``saf`` then queues the repeat or reversal
        that will resolve it, in the same commit; ``event`` is the parent's; ``acknowledged`` as for
        `transition`). Fires with (parent, child).
        """
        expected, target, prepared, now, announce, saf_row, answer = self._move(
            child_id, expected_from, to, changes, event, saf, received)
        finished = self._writer.submit(Call(
            txnunits.finish_operation, child_id, expected=expected, target=target, changes=prepared,
            forget_card=forget_card, event=announce, saf_row=saf_row, answer=answer, acknowledged=acknowledged,
            now=now))
        return finished if answer is None else finished.addErrback(self._journal_apart, answer)

    def _move(self, txn_id: str, expected_from: Iterable[Status], to: Status, changes: Mapping[str, Any],
              event: EventDraft | None, saf: SafDraft | None, received: Received | None) -> _Move:
        """What a move of a payment or an operation checks and builds on the reactor before its unit goes to the
        writer: the same for `transition` and `finish_operation`, so both refuse the same bad arguments alike."""
        statuses = (expected_from,) if isinstance(expected_from, str) else expected_from
        expected = frozenset(require_enum(Status, status, "expected_from") for status in statuses)
        if not expected:
            raise InvalidRecord("expected_from must name at least one status")
        target = require_enum(Status, to, "to")
        prepared = prepare_changes(changes)
        now = self._now()
        saf_row = self._saf_row(txn_id, saf, now) if saf is not None else None
        answer = self._received_row(txn_id, received) if received is not None else None
        return expected, target, prepared, now, txnunits.announced(event), saf_row, answer

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
        cutoff = self._now() - microseconds(self._config.idempotency_ttl)
        return self._readers.read(lambda db: store.find_by_idempotency_key(db, merchant_id, idempotency_key, cutoff))

    @fails_as_deferred
    def find_by_stan(self, connector: str, stan: str, *, since: datetime) -> defer.Deferred[list[Transaction]]:
        """Candidates for a bank message carrying this STAN (late responses, reversals)."""
        start = to_us(since)
        return self._readers.read(lambda db: store.find_by_stan(db, connector, stan, start))

    def find_sent(
        self, connector: str, stan: str, *, transmission_datetime: str | None = None, rrn: str | None = None
    ) -> defer.Deferred[list[Transaction]]:
        """Transactions sent with this STAN (and field 7 / field 37 when given): late-answer matching."""
        return self._readers.read(lambda db: store.find_sent(db, connector, stan, transmission_datetime, rrn))

    @fails_as_deferred
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

    def with_operations(self, txn_id: str) -> defer.Deferred[tuple[Transaction, list[Transaction]]]:
        """The payment and its operations as of one commit (`TransactionNotFound` if none)."""

        def work(db: Db) -> tuple[Transaction, list[Transaction]]:
            found = store.with_operations(db, txn_id)
            if found is None:
                raise TransactionNotFound(txn_id)
            return found

        return self._readers.read(work)

    def in_flight(self, limit: int = 10_000) -> defer.Deferred[list[Transaction]]:
        """Transactions left pending, timed out or awaiting reversal: crash recovery resumes each one."""
        return self._readers.read(lambda db: store.in_flight(db, limit))

    def stale_pending(self, before: datetime, limit: int = 10_000) -> defer.Deferred[list[Transaction]]:
        """Transactions still ``pending`` created before ``before``: the sweeper's candidates, filtered by the
        query (not every in-flight row read to keep a few)."""
        cutoff = to_us(before)
        return self._readers.read(lambda db: store.stale_pending(db, cutoff, limit))

    def transitions(self, txn_id: str) -> defer.Deferred[list[TransitionRecord]]:
        return self._readers.read(lambda db: store.transitions(db, txn_id))

    def sale_fees(self, connector: str, merchant_id: str, currency: str, masked_pan: str | None,
                  amount: int) -> dict[str, int]:
        """The configured fees of a sale approved for ``amount``, as transition changes: passed with the
        approval, they are set by its one UPDATE instead of a second one (`switch.journal.feebook`)."""
        bank_fee, merchant_fee = feebook.sale_fees(self._config.fees, connector, merchant_id, currency, masked_pan,
                                                   amount)
        return {"bank_fee": bank_fee, "merchant_fee": merchant_fee}

    def reveal_card(self, card: EncryptedCard) -> CardData:
        """Decrypt a stored PAN for the message that needs it; keep the result in memory only."""
        return self._vault.open(card)

    # Helpers

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
            "pan_hash": (new.pan_hash or self._vault.pan_hash(card.pan)) if card else None,
            **cards.card_columns(sealed),
            "stan": new.stan,
            "transmission_datetime": new.transmission_datetime,
            "sent_at": None,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "risk": None,
            "created_at": now,
            "updated_at": now,
            "amount_capture_pending": 0,
            "amount_refund_pending": 0,
            "business_date": self._open_dates.get(new.connector),
        }



def backend_for(config: JournalConfig) -> Backend:
    if config.backend == "postgresql":
        # Imported here: psycopg takes a tenth of a second to import, and a switch on SQLite (every `kswitch`
        # command run against one) never needs it.
        from switch.journal.postgres import PostgresBackend

        return PostgresBackend(config.pg_dsn, config.pg_schema, config.pg_batch_deadline)
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
