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

