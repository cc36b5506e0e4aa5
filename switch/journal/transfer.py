"""Copy a whole journal from one backend to another (SQLite ⇄ PostgreSQL), for moving between them.

It brings both databases to the current schema, refuses a target that already
holds data, reads the source in one snapshot, and copies every row with its ids
in one target transaction, so a failed copy leaves the target empty. Identity
counters on the target continue after the copied ids. Stop every switch process
first: the copy is consistent, but writes made after its snapshot stay behind.
It blocks: call it from a command, never from the reactor thread.

PAN ciphertexts are copied as they are; the target needs the same PAN key ring
and hash secret as the source. The node lease is not copied: the target is free
for the switch that starts on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import structlog

from switch.journal.config import JournalConfig
from switch.journal.db import Db, Row, run
from switch.journal.errors import JournalError
from switch.journal.journal import backend_for
from switch.journal.risk import fold_journalled_counts
from switch.journal.schema import migrate

log = structlog.get_logger("kswitch.journal")


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    identity: str | None = None


# Parents before children, so foreign keys hold at every insert.
TABLES: tuple[Table, ...] = (
    Table("transactions", ("txn_id",)),
    Table("transitions", ("transition_id",), identity="transition_id"),
    Table("messages", ("message_id",), identity="message_id"),
    Table("idempotency_keys", ("merchant_id", "idempotency_key")),
    Table("saf_queue", ("saf_id",), identity="saf_id"),
    Table("events", ("event_id",), identity="event_id"),
    Table("event_acks", ("client_id", "event_id")),
    Table("counters", ("name",)),  # RRN blocks: a moved journal must not hand out used RRNs again
    Table("business_days", ("connector", "business_date")),
    Table("reconciliations", ("reconciliation_id",), identity="reconciliation_id"),
    Table("reconciliation_exceptions", ("exception_id",), identity="exception_id"),
    Table("risk_blocklist", ("kind", "value")),  # a moved journal keeps its blocklist and holds,
    Table("risk_decisions", ("txn_id",)),  # the decisions `status` shows,
    Table("risk_windows", ("name",)),  # and the risk counts in their windows
)


class CopyRefused(JournalError):
    """The copy would overwrite or mix journals."""


@dataclass(frozen=True)
class CopyReport:
    schema_version: int
    rows: Mapping[str, int]


def copy_journal(source: JournalConfig, target: JournalConfig, *, batch: int = 1000) -> CopyReport:
    """Copy every row of the source journal into an empty target journal."""
    source_backend = backend_for(source)
    migrating = source_backend.open_writer()
    try:
        run(migrating, migrate)
    finally:
        migrating.close()
    src = source_backend.open_reader()
    try:
        dst = backend_for(target).open_writer()
        try:
            return run(dst, lambda db: _copy(src, db, batch))
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: Db, dst: Db, batch: int) -> CopyReport:
    version = migrate(dst).to_version
    occupied = [table.name for table in TABLES if dst.one(f"SELECT 1 AS x FROM {table.name} LIMIT 1")]
    if occupied:
        raise CopyRefused(f"the target journal already holds rows in {', '.join(occupied)}; copy into an empty one")
    src.begin_snapshot()
    dst.begin()
    try:
        counts = {table.name: _copy_table(src, dst, table, batch) for table in TABLES}
        fold_journalled_counts(dst, time.time_ns() // 1000)  # counts held in payments' rows, into counters'
        for table in TABLES:
            if table.identity is not None:
                dst.dialect.continue_identity(dst, table.name, table.identity)
    except BaseException:
        dst.rollback()
        raise
    finally:
        src.rollback()
    dst.commit()
    log.info("journal_copied", schema_version=version, rows=counts)
    return CopyReport(schema_version=version, rows=counts)


def _copy_table(src: Db, dst: Db, table: Table, batch: int) -> int:
    """Stream rows in key order; transactions go in without parents first, then get them back.

    A parent may sort after its child (caller-chosen ids), so parent links are
    restored once every transaction is present.
    """
    copied = 0
    parents: list[tuple[str, str]] = []
    for rows in _pages(src, table, batch):
        for row in rows:
            if table.name == "transactions" and row["parent_txn_id"] is not None:
                parents.append((row["txn_id"], row["parent_txn_id"]))
                row = {**row, "parent_txn_id": None}
            columns = list(row)
            dst.execute(
                f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})", row
            )
            copied += 1
    for txn_id, parent in parents:
        dst.execute(
            "UPDATE transactions SET parent_txn_id = :parent WHERE txn_id = :txn_id", {"parent": parent, "txn_id": txn_id}
        )
    return copied


def _pages(src: Db, table: Table, batch: int) -> Iterator[list[Row]]:
    """Keyset pagination over the primary key: constant cost per page however large the table."""
    order = ", ".join(table.key)
    after = f"WHERE ({order}) > ({', '.join(':last_' + column for column in table.key)}) "
    last: Row | None = None
    while True:
        params: dict[str, object] = {"limit": batch}
        if last is not None:
            params.update({f"last_{column}": last[column] for column in table.key})
        rows = src.all(
            f"SELECT * FROM {table.name} {after if last is not None else ''}ORDER BY {order} LIMIT :limit", params
        )
        if not rows:
            return
        yield rows
        last = rows[-1]
