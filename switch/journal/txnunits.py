"""The writer units of the journal's transaction methods (`switch.journal.journal`): module functions of plain data.

Why apart from the methods: a unit may be sent to a writer process (`switch.journal.units`), so it can
hold neither the journal nor its configuration. A method validates and builds its rows on the reactor
and hands them over with `Call`; what the writer was given once (the fee schedule, `FEES`) is found by
key; an event comes as its type and its payload, already dumped (`announced`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import structlog

from switch.domain.status import Kind, Status
from switch.journal import cards, events, feebook, operations, saf_queue, store
from switch.journal.db import Db, Later
from switch.journal.errors import CardDataRefused, InvalidRecord, TransactionNotFound
from switch.journal.guard import dump_fields
from switch.journal.models import EventDraft, SafAcknowledged, Transaction
from switch.journal.risk import RiskLedger, Screened, ScreeningLedger
from switch.journal.units import FEES, shared

log = structlog.get_logger("kswitch.journal")

S = TypeVar("S", bound=Screened)
Row = dict[str, Any]
Announced = tuple[str, str]
"""An event to append with a transaction: its type and its payload as JSON text."""


def announced(event: EventDraft | None) -> Announced | None:
    """``event`` as a unit takes it: its payload dumped (and checked) on the caller's thread."""
    return (event.type, dump_fields("payload", event.payload)) if event is not None else None


def append_answer(db: Db, answer: Row | None) -> None:
    """The bank's answer with the outcome it decides, unless its fields cannot be journalled (the writer checks
    them when it binds the row, before any statement): logged then, and the outcome commits without it."""
    if answer is None:
        return
    try:
        store.append_message(db, answer)
    except (CardDataRefused, InvalidRecord) as e:
        log.error("response_not_journalled", txn_id=answer["txn_id"], connector=answer["connector"], error=str(e))


def _announce(db: Db, txn: Transaction, event: Announced | None, now: int) -> None:
    if event is not None:
        events.append(db, merchant_id=txn.merchant_id, txn_id=txn.txn_id, type=event[0], payload=event[1], now=now)


def create(db: Db, row: Row, cutoff: int, event: Announced | None, message: Row | None, now: int) -> Transaction:
    """`Journal.create_transaction`'s unit."""
    txn = store.create_transaction(db, row, idempotency_cutoff=cutoff, queued=True)
    _announce(db, txn, event, now)
    if message is not None:
        store.append_message(db, {**message, "txn_id": txn.txn_id})
    return txn


def create_screened(db: Db, row: Row, message: Row, cutoff: int, screen: Callable[[RiskLedger], S],
                    refused_reason: str, now: int) -> tuple[Transaction | None, S]:
    """`Journal.create_screened`'s unit."""
    ledger = ScreeningLedger(db, now)
    verdict = screen(ledger)
    how = verdict.journal_as
    if how == "apart":
        return None, verdict
    if how == "refuse":
        refused = {**row, "status": Status.DECLINED, "reason": refused_reason, "stan": None, "rrn": None,
                   "transmission_datetime": None, "risk": ledger.row, **cards.card_columns(None)}
        return store.create_transaction(db, refused, idempotency_cutoff=cutoff, queued=True), verdict
    row["risk"] = ledger.row  # the row is this unit's own: set again if the batch is replayed
    store.insert_transaction(db, row, idempotency_cutoff=cutoff, queued=True)
    store.append_message(db, {**message, "txn_id": row["txn_id"]})
    return None, verdict


def transition(
    db: Db,
    txn_id: str,
    *,
    expected: frozenset[Status],
    target: Status,
    changes: Mapping[str, object],
    expected_version: int | None,
    forget_card: bool,
    event: Announced | None,
    saf_row: Row | None,
    risk: Callable[[RiskLedger, Transaction], object] | None,
    answer: Row | None,
    acknowledged: SafAcknowledged | None,
    later: bool,
    now: int,
) -> Transaction | Later[Transaction] | tuple[Transaction, object]:
    """`Journal.transition`'s unit: the moved transaction, with what ``risk`` returned when there is one
    (it ran on the writer's copy of it, so what it has to say comes back here)."""
    fees = shared(db, FEES)
    fees_set = feebook.sets_fees(changes)
    append_answer(db, answer)
    if later and db.pipelining:  # a payment's outcome: its row comes with the batch's others
        moved = store.transition_later(db, txn_id, expected_from=next(iter(expected)), to=target,
                                       changes=changes, forget_card=forget_card, now=now)
        return moved.then(lambda txn: feebook.after_transition(db, txn, fees, now, fees_set))
    txn = store.transition(
        db,
        txn_id,
        expected_from=expected,
        to=target,
        changes=changes,
        expected_version=expected_version,
        forget_card=forget_card,
        now=now,
    )
    txn = feebook.after_transition(db, txn, fees, now, fees_set)
    _announce(db, txn, event, now)
    if saf_row is not None:
        saf_queue.enqueue(db, saf_row)
    _complete(db, acknowledged, now)
    if risk is not None:
        return txn, risk(RiskLedger(db, now), txn)
    return txn


def begin_operation(db: Db, parent_id: str, *, kind: Kind, amount: int, allowed: frozenset[Status], row: Row,
                    cutoff: int, message: Row | None, saf_row: Row | None, event: Announced | None,
                    now: int) -> tuple[Transaction, Transaction]:
    """`Journal.begin_operation`'s unit."""
    parent = operations.reserve(db, parent_id, kind, amount, allowed, now)
    created = store.create_transaction(db, row, idempotency_cutoff=cutoff)
    if message is not None:
        store.append_message(db, message)
    if saf_row is not None:
        saf_queue.enqueue(db, saf_row)
    _announce(db, parent, event, now)
    return parent, created


def finish_operation(db: Db, child_id: str, *, expected: frozenset[Status], target: Status,
                     changes: Mapping[str, object], forget_card: bool, event: Announced | None,
                     saf_row: Row | None, answer: Row | None, acknowledged: SafAcknowledged | None,
                     now: int) -> tuple[Transaction, Transaction]:
    """`Journal.finish_operation`'s unit."""
    append_answer(db, answer)
    child = store.transition(db, child_id, expected_from=expected, to=target, changes=changes,
                             expected_version=None, forget_card=forget_card, now=now)
    if child.parent_txn_id is None:
        raise InvalidRecord(f"transaction {child_id} is not an operation on a payment")
    parent = operations.settle(db, child, now) or store.get_transaction(db, child.parent_txn_id)
    if parent is None:
        raise TransactionNotFound(child.parent_txn_id)
    child = feebook.after_operation(db, parent, child, shared(db, FEES), now)
    if saf_row is not None:
        saf_queue.enqueue(db, saf_row)
    _complete(db, acknowledged, now)
    _announce(db, parent, event, now)
    return parent, child


def _complete(db: Db, acknowledged: SafAcknowledged | None, now: int) -> None:
    if acknowledged is not None:
        saf_queue.complete(db, acknowledged.saf_id, now=now, response_code=acknowledged.response_code)
