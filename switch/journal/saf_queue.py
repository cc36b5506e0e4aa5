"""SQL for the store-and-forward queue: ordered per payment, never silently emptied.

An item is ``queued`` until the bank acknowledges it (``done``). After its
``max_attempts`` it becomes ``dead`` and a ``saf.dead_letter`` event is written in
the same transaction; only an operator moves it on, back to ``queued`` (retry) or
to ``dropped`` with a recorded reason. Rows are never deleted.

Order is ``saf_id``, kept only among the items of one payment (a transaction and the
operations on it); other payments' items are independent (`ready`). A dead item steps
out of the line so later items still flow; a retried one goes back to its original place.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from switch.journal import events
from switch.journal.cards import card_from_row, saf_context
from switch.journal.db import Db, Row, in_list
from switch.journal.errors import SafItemNotFound, StorageError
from switch.journal.guard import dump_fields, load_fields
from switch.journal.models import SafItem, SafKind, SafState, SafStats, from_us, optional_from_us
from switch.journal.refusals import SafStateError

_INSERT = (
    "INSERT INTO saf_queue (connector, txn_id, kind, mti, fields, pan_key_id, pan_ciphertext, state, attempts, "
    "max_attempts, enqueued_at, next_due_at, updated_at) "
    "VALUES (:connector, :txn_id, :kind, :mti, :fields, :pan_key_id, :pan_ciphertext, 'queued', 0, "
    ":max_attempts, :now, :due, :now) "
    "ON CONFLICT (txn_id, kind) WHERE state IN ('queued', 'dead') DO NOTHING RETURNING *"
)


def enqueue(db: Db, row: Mapping[str, object]) -> SafItem:
    """Queue an item; idempotent per (txn_id, kind) while an earlier one is queued or dead.

    The insert and the look-up of the item it collided with are retried once in
    case another switch process settled that item in between.
    """
    for _ in range(2):
        inserted = db.one(_INSERT, row)
        if inserted is not None:
            return item_from_row(inserted)
        active = db.one(
            "SELECT * FROM saf_queue WHERE txn_id = :txn_id AND kind = :kind AND state IN ('queued', 'dead')",
            {"txn_id": row["txn_id"], "kind": row["kind"]},
        )
        if active is not None:
            return item_from_row(active)
    raise StorageError(f"store-and-forward item for {row['txn_id']} kept changing under the enqueue; retry it")


def get(db: Db, saf_id: int) -> SafItem:
    row = db.one("SELECT * FROM saf_queue WHERE saf_id = :saf_id", {"saf_id": saf_id})
    if row is None:
        raise SafItemNotFound(saf_id)
    return item_from_row(row)


def items_of(db: Db, txn_id: str) -> list[SafItem]:
    rows = db.all("SELECT * FROM saf_queue WHERE txn_id = :txn_id ORDER BY saf_id", {"txn_id": txn_id})
    return [item_from_row(row) for row in rows]


def head(db: Db, connector: str) -> SafItem | None:
    row = db.one(
        "SELECT * FROM saf_queue WHERE state = 'queued' AND connector = :connector ORDER BY saf_id LIMIT 1",
        {"connector": connector},
    )
    return item_from_row(row) if row else None


def ready(db: Db, connector: str, due_by: int, limit: int) -> list[SafItem]:
    """Queued items of ``connector`` due by ``due_by`` that nothing of their payment is queued ahead of.

    One payment is the transaction and the operations on it (``parent_txn_id``): a reversal of a
    capture and the void of its authorization go in queue order, items of other payments
    independently.  Oldest first, at most ``limit``.  ``state IN ('queued', 'dead') AND state <>
    'dead'`` (rather than ``= 'queued'``) and the CROSS JOIN steer SQLite's planner to the partial
    index on (txn_id, kind) and the parent index: a few index look-ups per candidate, so
    thousands of queued items cost well under a millisecond per poll.
    """
    rows = db.all(
        "SELECT q.* FROM saf_queue q JOIN transactions t ON t.txn_id = q.txn_id "
        "WHERE q.state = 'queued' AND q.connector = :connector AND q.next_due_at <= :due_by "
        "AND NOT EXISTS (SELECT 1 FROM saf_queue e WHERE e.state IN ('queued', 'dead') AND e.state <> 'dead' "
        "AND e.txn_id IN (q.txn_id, COALESCE(t.parent_txn_id, q.txn_id)) AND e.saf_id < q.saf_id) "
        "AND NOT EXISTS (SELECT 1 FROM transactions s CROSS JOIN saf_queue e "
        "WHERE s.parent_txn_id = COALESCE(t.parent_txn_id, q.txn_id) AND e.txn_id = s.txn_id "
        "AND e.state IN ('queued', 'dead') AND e.state <> 'dead' AND e.saf_id < q.saf_id) "
        "ORDER BY q.saf_id LIMIT :limit",
        {"connector": connector, "due_by": due_by, "limit": limit},
    )
    return [item_from_row(row) for row in rows]


def record_attempt(
    db: Db, saf_id: int, *, now: int, next_due: int, response_code: str | None, error: str | None
) -> SafItem:
    """Count an attempt that did not complete the item; the last allowed one dead-letters it.

    An attempt is a send without a final answer (no answer, a retryable response code) or
    one that failed before the write (``error``: the message could not be built, encoded or
    journalled). The dead letter's ``state_reason`` names the last failure.
    """
    item = _require(db, saf_id, "record an attempt on", {SafState.QUEUED})
    attempts = item.attempts + 1
    dead = attempts >= item.max_attempts
    last = error if error is not None else f"response code {response_code}" if response_code else "no answer"
    updated = _update(
        db,
        item,
        {
            "state": SafState.DEAD if dead else SafState.QUEUED,
            "attempts": attempts,
            "last_attempt_at": now,
            "next_due_at": next_due,
            "last_response_code": response_code,
            "last_error": error,
            "state_reason": f"no final answer after {attempts} attempts; last: {last}"[:500] if dead else None,
            "updated_at": now,
        },
    )
    if dead:
        _announce_dead_letter(db, updated, now)
    return updated


def complete(db: Db, saf_id: int, *, now: int, response_code: str) -> SafItem:
    """The bank acknowledged the item (a late answer to a dead item also settles it)."""
    item = _require(db, saf_id, "complete", {SafState.QUEUED, SafState.DEAD})
    return _update(
        db,
        item,
        {
            "state": SafState.DONE,
            "attempts": item.attempts + 1,
            "last_attempt_at": now,
            "response_code": response_code,
            "updated_at": now,
        },
    )


def retry(db: Db, saf_id: int, *, now: int, operator: str) -> SafItem:
    item = _require(db, saf_id, "retry", {SafState.DEAD})
    return _update(
        db,
        item,
        {
            "state": SafState.QUEUED,
            "attempts": 0,
            "next_due_at": now,
            "state_reason": "retried by operator",
            "operator": operator,
            "updated_at": now,
        },
    )


def drop(db: Db, saf_id: int, *, now: int, operator: str, reason: str) -> SafItem:
    item = _require(db, saf_id, "drop", {SafState.QUEUED, SafState.DEAD})
    return _update(
        db, item, {"state": SafState.DROPPED, "state_reason": reason, "operator": operator, "updated_at": now}
    )


def list_items(db: Db, connector: str | None, states: Collection[SafState], limit: int) -> list[SafItem]:
    wanted, params = in_list("s", sorted(states))
    where = f"state IN {wanted}" + (" AND connector = :connector" if connector is not None else "")
    rows = db.all(
        f"SELECT * FROM saf_queue WHERE {where} ORDER BY connector, saf_id LIMIT :limit",
        {**params, "connector": connector, "limit": limit},
    )
    return [item_from_row(row) for row in rows]


def stats(db: Db) -> list[SafStats]:
    rows = db.all(
        "SELECT connector, "
        "SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END) AS depth, "
        "MIN(CASE WHEN state = 'queued' THEN enqueued_at END) AS oldest, "
        "SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) AS dead "
        "FROM saf_queue WHERE state IN ('queued', 'dead') GROUP BY connector ORDER BY connector"
    )
    return [
        SafStats(
            connector=row["connector"],
            depth=int(row["depth"]),
            oldest_enqueued_at=optional_from_us(row["oldest"]),
            dead_letters=int(row["dead"]),
        )
        for row in rows
    ]


def _require(db: Db, saf_id: int, action: str, allowed: Collection[SafState]) -> SafItem:
    item = get(db, saf_id)
    if item.state not in allowed:
        raise SafStateError(item, action, allowed)
    return item


def _update(db: Db, item: SafItem, values: Mapping[str, object]) -> SafItem:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    row = db.one(
        f"UPDATE saf_queue SET {assignments} WHERE saf_id = :saf_id AND state = :seen_state RETURNING *",
        {**values, "saf_id": item.saf_id, "seen_state": item.state},
    )
    if row is None:
        raise SafStateError(get(db, item.saf_id), "update", {item.state})
    return item_from_row(row)


def _announce_dead_letter(db: Db, item: SafItem, now: int) -> None:
    owner = db.one("SELECT merchant_id FROM transactions WHERE txn_id = :txn_id", {"txn_id": item.txn_id})
    if owner is None:
        return
    events.append(
        db,
        merchant_id=owner["merchant_id"],
        txn_id=item.txn_id,
        type="saf.dead_letter",
        payload=dump_fields(
            "payload",
            {
                "saf_id": item.saf_id,
                "connector": item.connector,
                "kind": item.kind.value,
                "attempts": item.attempts,
                "last_response_code": item.last_response_code,
                "last_error": item.last_error,
            },
        ),
        now=now,
    )


def item_from_row(row: Row) -> SafItem:
    return SafItem(
        saf_id=row["saf_id"],
        connector=row["connector"],
        txn_id=row["txn_id"],
        kind=SafKind(row["kind"]),
        mti=row["mti"],
        fields=load_fields(row["fields"]),
        card=card_from_row(row, saf_context(row["txn_id"])),
        state=SafState(row["state"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        enqueued_at=from_us(row["enqueued_at"]),
        next_due_at=from_us(row["next_due_at"]),
        last_attempt_at=optional_from_us(row["last_attempt_at"]),
        last_response_code=row["last_response_code"],
        last_error=row["last_error"],
        response_code=row["response_code"],
        state_reason=row["state_reason"],
        operator=row["operator"],
        updated_at=from_us(row["updated_at"]),
    )
