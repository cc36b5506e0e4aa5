"""Schema versioning: fresh databases, upgrades of older ones, refusal of newer ones (both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from switch.journal import (
    JournalConfig,
    SafDraft,
    SafKind,
    SchemaError,
    SchemaTooNew,
    Status,
    StorageError,
    open_journal,
    store,
)
from switch.journal.db import Db, run
from switch.journal.journal import backend_for
from switch.journal.schema import MIGRATIONS, Migration, MigrationResult, current_version, latest_version, migrate

LATEST = latest_version()


@contextmanager
def writer_connection(config: JournalConfig) -> Iterator[Db]:
    opened = backend_for(config).open_writer()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def db(config: JournalConfig) -> Iterator[Db]:
    with writer_connection(config) as opened:
        yield opened


def versions(db: Db) -> list[int]:
    return [row["version"] for row in db.all("SELECT version FROM schema_version ORDER BY version")]


def test_fresh_database_gets_every_step(db: Db) -> None:
    assert migrate(db) == MigrationResult(from_version=0, to_version=LATEST)
    assert versions(db) == list(range(1, LATEST + 1))
    assert migrate(db) == MigrationResult(from_version=LATEST, to_version=LATEST)


@pytest_twisted.ensureDeferred
async def test_older_database_is_upgraded_and_keeps_its_data(config: JournalConfig, registry: Any) -> None:
    with writer_connection(config) as db:
        migrate(db, MIGRATIONS[:1])
        db.begin()
        db.execute(
            "INSERT INTO transactions (txn_id, kind, merchant_id, connector, status, version, amount, currency, "
            "amount_authorized, amount_captured, amount_refunded, created_at, updated_at) "
            "VALUES ('old-1', 'sale', 'm1', 'bank_a', 'pending', 1, 500, 'EUR', 0, 0, 0, 1, 1)"
        )
        db.commit()
        assert current_version(db) == 1

    journal = await open_journal(config, reactor, registry=registry)
    try:
        old = await journal.get_transaction("old-1")
        assert (old.status, old.amount, old.card) == (Status.PENDING, 500, None)
        item = await journal.saf_enqueue("old-1", SafDraft(connector="bank_a", kind=SafKind.REVERSAL, mti="0400", fields={}))
        assert item.txn_id == "old-1"
    finally:
        await journal.close()
    with writer_connection(config) as db:
        assert versions(db) == list(range(1, LATEST + 1))


def test_the_parent_index_holds_operations_only_and_still_finds_them(db: Db) -> None:
    """Step 15: a payment (no parent) no longer enters the parent index, so its commit writes one page less;
    the look-ups by parent still find an operation through it."""
    migrate(db, MIGRATIONS[:14])
    db.begin()
    for txn_id, parent in (("pay-1", None), ("cap-1", "pay-1")):
        db.execute(
            "INSERT INTO transactions (txn_id, kind, parent_txn_id, merchant_id, connector, status, version, amount, "
            "currency, amount_authorized, amount_captured, amount_refunded, created_at, updated_at) "
            "VALUES (:txn_id, 'sale', :parent, 'm1', 'bank_a', 'approved', 1, 500, 'EUR', 500, 500, 0, 1, 1)",
            {"txn_id": txn_id, "parent": parent},
        )
    db.commit()
    assert migrate(db) == MigrationResult(from_version=14, to_version=LATEST)
    if db.dialect.name == "sqlite":
        (index,) = db.all("SELECT partial FROM pragma_index_list('transactions') WHERE name = 'transactions_parent'")
        assert index["partial"] == 1
        plan = " ".join(str(row["detail"]) for row in db.all(
            "EXPLAIN QUERY PLAN SELECT txn_id FROM transactions WHERE parent_txn_id = 'pay-1'"))
        assert "transactions_parent" in plan
    else:
        (index,) = db.all("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                          "AND indexname = 'transactions_parent'")
        assert index["indexdef"].endswith("WHERE (parent_txn_id IS NOT NULL)")
    assert [t.txn_id for t in store.children(db, "pay-1")] == ["cap-1"]
    found = store.with_operations(db, "pay-1")
    assert found is not None
    assert (found[0].txn_id, [t.txn_id for t in found[1]]) == ("pay-1", ["cap-1"])


@pytest_twisted.ensureDeferred
async def test_newer_database_is_refused(config: JournalConfig, registry: Any) -> None:
    with writer_connection(config) as db:
        migrate(db)
        db.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'from the future', 0)")
    try:
        await open_journal(config, reactor, registry=registry)
    except SchemaTooNew as refused:
        assert (refused.found, refused.supported) == (99, LATEST)
        assert f"schema version 99, this kswitch supports up to {LATEST}" in str(refused)
    else:
        raise AssertionError("a database from a newer kswitch was opened")
    with writer_connection(config) as db:
        assert versions(db)[-1] == 99


def test_a_failing_step_changes_nothing(db: Db) -> None:
    broken = (*MIGRATIONS[:1], Migration(2, "broken", ("CREATE TABLE extra (x INTEGER)", "CREATE TABLE nonsense (")))
    with pytest.raises(StorageError):
        run(db, lambda conn: migrate(conn, broken))
    assert migrate(db) == MigrationResult(from_version=0, to_version=LATEST)


def test_steps_must_be_numbered_without_gaps(db: Db) -> None:
    with pytest.raises(SchemaError, match="without gaps"):
        migrate(db, (MIGRATIONS[0], Migration(3, "skips two", ())))

