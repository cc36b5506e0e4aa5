"""SQL for transactions, their transitions, messages and idempotency keys.

Functions here run on a journal thread with a `Db` (the writer's, inside its
batch transaction, or a reader's) and never see a clear PAN: callers hand over
rows already masked, hashed and sealed.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import NamedTuple

import orjson

from switch.domain.status import IN_FLIGHT_STATUSES, Kind, Status
from switch.journal.cards import card_from_row, transaction_context
from switch.journal.db import Db, Later, Row, in_list
from switch.journal.errors import (
    StorageError,
    TransactionExists,
    TransactionNotFound,
    TransitionRefused,
    VersionConflict,
)
from switch.journal.guard import load_fields
from switch.journal.models import Direction, MessageRecord, Transaction, TransitionRecord, from_us, optional_from_us
from switch.journal.refusals import DuplicateIdempotencyKey

TRANSACTION_COLUMNS = (
    "txn_id", "kind", "parent_txn_id", "merchant_id", "store_id", "order_id", "connector", "status",
    "version", "amount", "currency", "amount_authorized", "amount_captured", "amount_refunded",
    "stan", "rrn", "auth_code", "response_code", "reason", "masked_pan", "pan_hash", "pan_key_id",
    "pan_ciphertext", "transmission_datetime", "sent_at", "idempotency_key", "request_hash",
    "created_at", "updated_at", "amount_capture_pending", "amount_refund_pending", "business_date", "risk",
)  # fmt: skip

class _Insert(NamedTuple):
    """An INSERT of a row that may already be there, as sent in a pipeline and as sent on its own."""

    plain: str
    unless_taken: str  # the same with the conflict clause that makes it a no-op

    @classmethod
    def of(cls, insert: str, conflict: str) -> _Insert:
        return cls(insert, f"{insert} ON CONFLICT ({conflict}) DO NOTHING")


_INSERT_TRANSACTION = _Insert.of(
    f"INSERT INTO transactions ({', '.join(TRANSACTION_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in TRANSACTION_COLUMNS)})",
    "txn_id",
)
_BIND_KEY = _Insert.of(
    "INSERT INTO idempotency_keys (merchant_id, idempotency_key, txn_id, created_at) "
    "VALUES (:merchant_id, :idempotency_key, :txn_id, :created_at)",
    "merchant_id, idempotency_key",
)
_LATER_COLUMNS = {"bank_fee": 0, "merchant_fee": 0, "reversal_business_date": None}
"""The columns a new transaction is not inserted with, as the table's defaults leave them."""


def create_transaction(db: Db, row: Mapping[str, object], *, idempotency_cutoff: int,
                       queued: bool = False) -> Transaction:
    """`insert_transaction`, and the transaction as inserted."""
    insert_transaction(db, row, idempotency_cutoff=idempotency_cutoff, queued=queued)
    return transaction_from_row({**_LATER_COLUMNS, **row})  # the row as inserted: no RETURNING to read back


def insert_transaction(db: Db, row: Mapping[str, object], *, idempotency_cutoff: int, queued: bool = False) -> None:
    """Insert a transaction and its first transition; bind its idempotency key if it has one.

    An idempotency key younger than ``idempotency_cutoff`` (microseconds) makes
    this raise `DuplicateIdempotencyKey` with the transaction it already names; an
    older one is released and rebound.

    ``queued``: the caller's unit sends no statement of its own that names the new row, so in a pipelined
    batch the row (and its key) may wait for the batch's COPY (`Db.insert_later`) instead of a statement
    each: a new payment's most expensive part of the writer's time on PostgreSQL. A key or id already
    taken then fails the COPY, and so the batch, whose unpipelined replay gets here again and answers the
    unit that took it.
    """
    key = row["idempotency_key"]
    if key is not None:
        _claim_idempotency_key(db, row, idempotency_cutoff)
    if row["parent_txn_id"] is not None and get_transaction(db, str(row["parent_txn_id"])) is None:
        raise TransactionNotFound(str(row["parent_txn_id"]))
    bound = {k: row[k] for k in ("merchant_id", "idempotency_key", "txn_id", "created_at")} if key is not None else None
    if queued and db.pipelining:
        db.insert_later(_INSERT_TRANSACTION.plain, row, referenced=True)
        if bound is not None:
            db.insert_later(_BIND_KEY.plain, bound)
    else:
        if not _inserted(db, _INSERT_TRANSACTION, row):
            raise TransactionExists(str(row["txn_id"]))
        if bound is not None and not _inserted(db, _BIND_KEY, bound):
            # Another switch process bound the key since the check above.
            _claim_idempotency_key(db, row, idempotency_cutoff)
            raise StorageError(f"idempotency key of transaction {row['txn_id']} changed hands during the insert; retry")
    record_transition(db, row["txn_id"], None, row["status"], row["created_at"], row["reason"], {})


def _inserted(db: Db, insert: _Insert, params: Mapping[str, object]) -> bool:
    """Insert unless the row's key is taken; False when it was. In a pipelined batch the INSERT is sent
    unread and a taken key fails the batch instead: its unpipelined replay (`Db.send`) then gets here
    again and answers False in the unit that inserted."""
    if db.pipelining:
        db.send(insert.plain, params)
        return True
    return bool(db.execute(insert.unless_taken, params))


def _claim_idempotency_key(db: Db, row: Mapping[str, object], cutoff: int) -> None:
    params = {"merchant_id": row["merchant_id"], "idempotency_key": row["idempotency_key"]}
    bound = db.one(
        "SELECT txn_id, created_at FROM idempotency_keys "
        "WHERE merchant_id = :merchant_id AND idempotency_key = :idempotency_key",
        params,
    )
    if bound is None:
        return
    if bound["created_at"] >= cutoff:
        existing = get_transaction(db, bound["txn_id"])
        if existing is None:
            raise TransactionNotFound(bound["txn_id"])
        raise DuplicateIdempotencyKey(existing, same_request=existing.request_hash == row["request_hash"])
    db.execute(
        "DELETE FROM idempotency_keys WHERE merchant_id = :merchant_id AND idempotency_key = :idempotency_key",
        params,
    )


_REVERSAL_DATE = ("reversal_business_date = (SELECT business_date FROM business_days "
                  "WHERE business_days.connector = transactions.connector AND state = 'open')")
"""A reversal is dated by its connector's business date when it is acknowledged (the bank's date then)."""


def transition(
    db: Db,
    txn_id: str,
    *,
    expected_from: Collection[str],
    to: str,
    changes: Mapping[str, object],
    expected_version: int | None,
    forget_card: bool,
    now: int,
) -> Transaction:
    """Compare-and-set the status (and the given columns) in one UPDATE, and record the transition.

    ``previous_status = status`` lets the UPDATE's RETURNING tell which expected
    state the row was in, on both backends. Only a refused transition pays for a
    second query, to say why.
    """
    sql, params = _transition_statement(txn_id, expected_from, to, changes, expected_version, forget_card, now)
    updated = db.one(sql, params)
    if updated is None:
        raise _refusal(db, txn_id, expected_from, to, expected_version)
    _record(db, txn_id, updated["previous_status"], to, changes, forget_card, now)
    return transaction_from_row(updated)


def transition_later(
    db: Db, txn_id: str, *, expected_from: str, to: str, changes: Mapping[str, object], forget_card: bool, now: int,
) -> Later[Transaction]:
    """`transition` from one status, its row read once the batch's pipeline has answered: a row of the batch's
    grouped UPDATE where the backend has one and the change fits (`Db.update_later`), else a statement of its own
    (`Db.one_later`). The transition's audit row is queued now, from the one status it can have moved from. A refusal is found when it
    is resolved, and fails the batch, whose unit-by-unit replay refuses this unit alone."""
    if db.dialect.groups_updates and _groupable(to, changes):
        read = db.update_later(_grouped_transition(tuple(changes), forget_card), "txn_id",
                               {**changes, "txn_id": txn_id, "previous_status": expected_from, "status": to,
                                "updated_at": now})
    else:
        sql, params = _transition_statement(txn_id, (expected_from,), to, changes, None, forget_card, now)
        read = db.one_later(sql, params)
    _record(db, txn_id, expected_from, to, changes, forget_card, now)

    def moved(updated: Row | None) -> Transaction:
        if updated is None:
            raise _refusal(db, txn_id, (expected_from,), to, None)
        return transaction_from_row(updated)

    return Later(read, moved)


_FORGET_CARD = ("pan_key_id = NULL", "pan_ciphertext = NULL")
"""What a transition that forgets the card sets, alone or grouped."""


def _transition_statement(
    txn_id: str, expected_from: Collection[str], to: str, changes: Mapping[str, object], expected_version: int | None,
    forget_card: bool, now: int,
) -> tuple[str, dict[str, object]]:
    statuses, status_params = in_list("expected", sorted(expected_from))
    assignments = ["previous_status = status", "status = :to", "version = version + 1", "updated_at = :now"]
    assignments += [f"{column} = :{column}" for column in changes]
    if forget_card:
        assignments += _FORGET_CARD
    if to == Status.REVERSED:
        assignments.append(_REVERSAL_DATE)
    version_check = " AND version = :expected_version" if expected_version is not None else ""
    return (f"UPDATE transactions SET {', '.join(assignments)} "
            f"WHERE txn_id = :txn_id AND status IN {statuses}{version_check} RETURNING *",
            {**changes, **status_params, "to": to, "now": now, "txn_id": txn_id, "expected_version": expected_version})


_GROUP_KEYS = frozenset({"txn_id", "previous_status", "status", "updated_at", "version"})
"""A grouped transition's own columns in its rows (`_grouped_transition`): no change may name one."""


def _groupable(to: str, changes: Mapping[str, object]) -> bool:
    """True when the transition can be a row of its batch's grouped UPDATE: each value goes as JSON as it is
    (text, a 64-bit integer, NULL), and nothing is computed by SQL from another table (a reversal's date)."""
    if to == Status.REVERSED or not _GROUP_KEYS.isdisjoint(changes):
        return False
    for value in changes.values():
        kind = type(value)
        if not (value is None or isinstance(value, str) or (kind is int and -(1 << 63) <= value < 1 << 63)):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _grouped_transition(columns: tuple[str, ...], forget_card: bool) -> str:
    """`_transition_statement` for every row of a batch that sets ``columns`` (`Db.update_later`): each row
    names the payment, the one status it moves from (``previous_status``), the one it moves to (``status``),
    the time (``updated_at``) and its changes, typed as the table's own columns."""
    assignments = ["previous_status = t.status", "status = v.status", "version = t.version + 1",
                   "updated_at = v.updated_at", *(f"{column} = v.{column}" for column in columns)]
    if forget_card:
        assignments += _FORGET_CARD
    return (f"UPDATE transactions AS t SET {', '.join(assignments)} "
            "FROM jsonb_populate_recordset(NULL::transactions, CAST(:rows AS jsonb)) AS v "
            "WHERE t.txn_id = v.txn_id AND t.status = v.previous_status RETURNING t.*")


def _record(db: Db, txn_id: str, previous: str, to: str, changes: Mapping[str, object], forget_card: bool,
            now: int) -> None:
    recorded = {column: _audit_value(column, value) for column, value in changes.items()}
    if forget_card:
        recorded["card"] = "forgotten"
    record_transition(db, txn_id, previous, to, now, changes.get("reason"), recorded)


def _refusal(
    db: Db, txn_id: str, expected_from: Collection[str], to: str, expected_version: int | None
) -> Exception:
    current = get_transaction(db, txn_id)
    if current is None:
        return TransactionNotFound(txn_id)
    if current.status not in expected_from:
        return TransitionRefused(txn_id, current.status, expected_from, to)
    return VersionConflict(txn_id, expected_version if expected_version is not None else -1, current.version)


def record_transition(
    db: Db, txn_id: str, from_status: str | None, to: str, at: int, reason: object, changes: Mapping[str, object]
) -> None:
    """The audit row of a status change: queued, sent with the batch's other transitions (`Db.insert_later`)."""
    db.insert_later(
        "INSERT INTO transitions (txn_id, from_status, to_status, at, reason, changes) "
        "VALUES (:txn_id, :from_status, :to_status, :at, :reason, :changes)",
        {
            "txn_id": txn_id,
            "from_status": from_status,
            "to_status": to,
            "at": at,
            "reason": reason,
            "changes": orjson.dumps(changes, option=orjson.OPT_SORT_KEYS).decode() if changes else "{}",
        },
    )


def _audit_value(column: str, value: object) -> object:
    """Timestamps go into the JSON audit as ISO 8601 text: epoch numbers would trip the PAN guard."""
    if column.endswith("_at") and isinstance(value, int):
        return from_us(value).isoformat()
    return value


def get_transaction(db: Db, txn_id: str) -> Transaction | None:
    row = db.one("SELECT * FROM transactions WHERE txn_id = :txn_id", {"txn_id": txn_id})
    return transaction_from_row(row) if row else None


def find_by_order(db: Db, merchant_id: str, order_id: str) -> list[Transaction]:
    return _transactions(
        db,
        "WHERE merchant_id = :merchant_id AND order_id = :order_id ORDER BY created_at, txn_id",
        {"merchant_id": merchant_id, "order_id": order_id},
    )


def find_by_idempotency_key(db: Db, merchant_id: str, key: str, cutoff: int) -> Transaction | None:
    row = db.one(
        "SELECT t.* FROM idempotency_keys i JOIN transactions t ON t.txn_id = i.txn_id "
        "WHERE i.merchant_id = :merchant_id AND i.idempotency_key = :idempotency_key AND i.created_at >= :cutoff",
        {"merchant_id": merchant_id, "idempotency_key": key, "cutoff": cutoff},
    )
    return transaction_from_row(row) if row else None


def find_by_stan(db: Db, connector: str, stan: str, since: int) -> list[Transaction]:
    return _transactions(
        db,
        "WHERE connector = :connector AND stan = :stan AND created_at >= :since ORDER BY created_at, txn_id",
        {"connector": connector, "stan": stan, "since": since},
    )


def find_sent(
    db: Db, connector: str, stan: str, transmission_datetime: str | None, rrn: str | None
) -> list[Transaction]:
    """Transactions whose request went out with this STAN and, when given, this transmission
    date/time (field 7) and RRN (field 37), as journalled at send time."""
    where = "WHERE connector = :connector AND stan = :stan"
    if transmission_datetime is not None:
        where += " AND transmission_datetime = :sent"
    if rrn is not None:
        where += " AND rrn = :rrn"
    return _transactions(db, f"{where} ORDER BY created_at, txn_id",
                         {"connector": connector, "stan": stan, "sent": transmission_datetime, "rrn": rrn})


def find_by_pan_hash(db: Db, pan_hash: bytes, merchant_id: str | None, since: int, limit: int) -> list[Transaction]:
    merchant = "AND merchant_id = :merchant_id " if merchant_id is not None else ""
    return _transactions(
        db,
        f"WHERE pan_hash = :pan_hash AND created_at >= :since {merchant}ORDER BY created_at DESC LIMIT :limit",
        {"pan_hash": pan_hash, "since": since, "merchant_id": merchant_id, "limit": limit},
    )


def children(db: Db, txn_id: str) -> list[Transaction]:
    return _transactions(db, "WHERE parent_txn_id = :txn_id ORDER BY created_at, txn_id", {"txn_id": txn_id})


def with_operations(db: Db, txn_id: str) -> tuple[Transaction, list[Transaction]] | None:
    """A payment and its operations from ONE statement: a statement reads one snapshot on both
    backends, so the parent's totals and its operations' states always come from the same commit
    (two statements under PostgreSQL's read committed could straddle a settlement)."""
    rows = _transactions(
        db, "WHERE txn_id = :txn_id OR parent_txn_id = :txn_id ORDER BY created_at, txn_id", {"txn_id": txn_id}
    )
    parent = next((t for t in rows if t.txn_id == txn_id), None)
    return None if parent is None else (parent, [t for t in rows if t.txn_id != txn_id])


def in_flight(db: Db, limit: int) -> list[Transaction]:
    """Transactions an owner was still working on; must match the transactions_in_flight index."""
    statuses, params = in_list("status", sorted(IN_FLIGHT_STATUSES))
    return _transactions(db, f"WHERE status IN {statuses} ORDER BY created_at LIMIT :limit", {**params, "limit": limit})


def stale_pending(db: Db, cutoff: int, limit: int) -> list[Transaction]:
    """Transactions still ``pending`` created before ``cutoff`` (microseconds), oldest first; the status list
    repeats the transactions_in_flight index's condition so that both backends use the index."""
    statuses, params = in_list("status", sorted(IN_FLIGHT_STATUSES))
    return _transactions(
        db, f"WHERE status IN {statuses} AND status = :pending AND created_at < :cutoff ORDER BY created_at LIMIT :limit",
        {**params, "pending": Status.PENDING.value, "cutoff": cutoff, "limit": limit},
    )


def _transactions(db: Db, where: str, params: Mapping[str, object]) -> list[Transaction]:
    return [transaction_from_row(row) for row in db.all(f"SELECT * FROM transactions {where}", params)]


def transitions(db: Db, txn_id: str) -> list[TransitionRecord]:
    rows = db.all("SELECT * FROM transitions WHERE txn_id = :txn_id ORDER BY transition_id", {"txn_id": txn_id})
    return [
        TransitionRecord(
            transition_id=row["transition_id"],
            txn_id=row["txn_id"],
            from_status=Status(row["from_status"]) if row["from_status"] else None,
            to_status=Status(row["to_status"]),
            at=from_us(row["at"]),
            reason=row["reason"],
            changes=load_fields(row["changes"]),
        )
        for row in rows
    ]


def append_message(db: Db, row: Mapping[str, object]) -> None:
    """A message exchanged with a bank: queued, sent with the batch's other messages (`Db.insert_later`)."""
    db.insert_later(
        "INSERT INTO messages (txn_id, direction, connector, mti, stan, response_code, fields, at) "
        "VALUES (:txn_id, :direction, :connector, :mti, :stan, :response_code, :fields, :at)",
        row,
    )


def messages(db: Db, txn_id: str) -> list[MessageRecord]:
    rows = db.all("SELECT * FROM messages WHERE txn_id = :txn_id ORDER BY message_id", {"txn_id": txn_id})
    return [
        MessageRecord(
            message_id=row["message_id"],
            txn_id=row["txn_id"],
            direction=Direction(row["direction"]),
            connector=row["connector"],
            mti=row["mti"],
            stan=row["stan"],
            response_code=row["response_code"],
            fields=load_fields(row["fields"]),
            at=from_us(row["at"]),
        )
        for row in rows
    ]


def purge_idempotency_keys(db: Db, cutoff: int, limit: int) -> int:
    """Release at most ``limit`` keys older than ``cutoff``, oldest first; how many went."""
    return db.execute(
        "DELETE FROM idempotency_keys WHERE (merchant_id, idempotency_key) IN (SELECT merchant_id, idempotency_key "
        "FROM idempotency_keys WHERE created_at < :cutoff ORDER BY created_at LIMIT :limit)",
        {"cutoff": cutoff, "limit": limit},
    )


_KINDS = {kind.value: kind for kind in Kind}
_STATUSES = {status.value: status for status in Status}


def transaction_from_row(row: Row) -> Transaction:
    """The row as a `Transaction`, built without the dataclass's ``__init__``: a frozen dataclass sets
    its 36 fields one ``object.__setattr__`` at a time, and the writer builds two of these per payment
    on the thread whose Python time the reactor waits for (one GIL). Rows come from the journal's own
    columns, so there is nothing for an ``__init__`` to check; tests/journal/test_store_rows.py keeps
    the field list complete."""
    txn_id = row["txn_id"]
    kind, status, key_id = row["kind"], row["status"], row["pan_key_id"]
    txn = object.__new__(Transaction)
    txn.__dict__.update(
        txn_id=txn_id,
        kind=_KINDS.get(kind) or Kind(kind),
        parent_txn_id=row["parent_txn_id"],
        merchant_id=row["merchant_id"],
        store_id=row["store_id"],
        order_id=row["order_id"],
        connector=row["connector"],
        status=_STATUSES.get(status) or Status(status),
        version=row["version"],
        amount=row["amount"],
        currency=row["currency"],
        amount_authorized=row["amount_authorized"],
        amount_captured=row["amount_captured"],
        amount_refunded=row["amount_refunded"],
        stan=row["stan"],
        rrn=row["rrn"],
        auth_code=row["auth_code"],
        response_code=row["response_code"],
        reason=row["reason"],
        masked_pan=row["masked_pan"],
        pan_hash=_bytes(row["pan_hash"]),
        card=None if key_id is None else card_from_row(row, transaction_context(txn_id)),
        transmission_datetime=row["transmission_datetime"],
        sent_at=optional_from_us(row["sent_at"]),
        idempotency_key=row["idempotency_key"],
        request_hash=_bytes(row["request_hash"]),
        created_at=from_us(row["created_at"]),
        updated_at=from_us(row["updated_at"]),
        amount_capture_pending=row["amount_capture_pending"],
        amount_refund_pending=row["amount_refund_pending"],
        bank_fee=row["bank_fee"],
        merchant_fee=row["merchant_fee"],
        business_date=row["business_date"],
        reversal_business_date=row["reversal_business_date"],
    )
    return txn


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return bytes(value) if value is not None else None
