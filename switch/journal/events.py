"""SQL for the notification event log and per-client acknowledgements.

Readers page through events by id ("everything after id N"), which is only safe
if ids become visible in increasing order. Within one process the writer thread
commits in order; across processes sharing a PostgreSQL schema, each transaction
takes the dialect's event-order lock before its first event and holds it until
COMMIT, so no event id can commit before a smaller one.
"""

from __future__ import annotations

from collections.abc import Sequence

from switch.domain.events import Event
from switch.journal.db import Db, Row, in_list
from switch.journal.errors import UnknownEvent
from switch.journal.guard import load_fields
from switch.journal.models import from_us


def append(db: Db, *, merchant_id: str, txn_id: str | None, type: str, payload: str, now: int) -> Event:
    db.lock_event_order()
    row = db.one(
        "INSERT INTO events (merchant_id, txn_id, type, payload, created_at) "
        "VALUES (:merchant_id, :txn_id, :type, :payload, :now) RETURNING *",
        {"merchant_id": merchant_id, "txn_id": txn_id, "type": type, "payload": payload, "now": now},
    )
    if row is None:
        raise RuntimeError("INSERT ... RETURNING gave no row")
    return event_from_row(row)


def after(db: Db, merchant_ids: Sequence[str], after_id: int, limit: int) -> list[Event]:
    merchants, params = in_list("m", merchant_ids)
    rows = db.all(
        f"SELECT * FROM events WHERE merchant_id IN {merchants} AND event_id > :after "
        "ORDER BY event_id LIMIT :limit",
        {**params, "after": after_id, "limit": limit},
    )
    return [event_from_row(row) for row in rows]


def unacknowledged(db: Db, client_id: str, merchant_ids: Sequence[str], after_id: int, limit: int) -> list[Event]:
    merchants, params = in_list("m", merchant_ids)
    rows = db.all(
        f"SELECT e.* FROM events e WHERE e.merchant_id IN {merchants} AND e.event_id > :after "
        "AND NOT EXISTS (SELECT 1 FROM event_acks a WHERE a.client_id = :client_id AND a.event_id = e.event_id) "
        "ORDER BY e.event_id LIMIT :limit",
        {**params, "after": after_id, "limit": limit, "client_id": client_id},
    )
    return [event_from_row(row) for row in rows]


def acknowledge(db: Db, client_id: str, event_ids: Sequence[int], now: int) -> int:
    """Record acknowledgements; repeating one is harmless. Returns how many were new."""
    wanted = sorted(set(event_ids))
    ids, params = in_list("e", wanted)
    found = {row["event_id"] for row in db.all(f"SELECT event_id FROM events WHERE event_id IN {ids}", params)}
    missing = set(wanted) - found
    if missing:
        raise UnknownEvent(missing)
    added = 0
    for event_id in wanted:
        added += db.execute(
            "INSERT INTO event_acks (client_id, event_id, acked_at) VALUES (:client_id, :event_id, :now) "
            "ON CONFLICT (client_id, event_id) DO NOTHING",
            {"client_id": client_id, "event_id": event_id, "now": now},
        )
    return added


def event_from_row(row: Row) -> Event:
    return Event(
        event_id=row["event_id"],
        merchant_id=row["merchant_id"],
        txn_id=row["txn_id"],
        type=row["type"],
        payload=load_fields(row["payload"]),
        created_at=from_us(row["created_at"]),
    )
