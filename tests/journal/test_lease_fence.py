"""The lease fence (`switch.journal.lease.fence`): once another node holds the journal's lease, no batch of this
node's writer commits, whichever writer (thread or process), on SQLite and PostgreSQL; on PostgreSQL a takeover
waits for a batch in progress; and the node steps down at the first refused batch."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock as ReactorClock

from switch.journal import open_journal
from switch.journal.batch import Committer
from switch.journal.db import Db, run
from switch.journal.errors import LeaseLost, StorageError
from switch.journal.lease import SHARED_OWNER, NodeLease, acquire, fence
from switch.journal.postgres import PostgresBackend
from switch.journal.schema import migrate
from switch.journal.sqlite import SQLiteBackend
from tests.journal.conftest import PG_DSN, require_postgres
from tests.journal.test_journal import failure_of, sale
from tests.journal.test_lease import holder

pytestmark = pytest.mark.timeout(60)

TAKE_OVER = "UPDATE node_lease SET owner = 'other-node', host = 'host-b' WHERE name = 'journal'"


def pg_connect(schema: str) -> Any:
    """A connection of the test's own, every wait on it bounded."""
    conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10, options="-c statement_timeout=30000")
    conn.execute(f'SET search_path TO "{schema}"')
    return conn


def raw_connect(config: Any) -> Any:
    if config.backend == "postgresql":
        return pg_connect(config.pg_schema)
    return sqlite3.connect(config.sqlite_path, timeout=10)


def take_over(config: Any) -> None:
    """Another node takes the lease row, from a connection of its own (as its `acquire` would)."""
    conn = raw_connect(config)
    try:
        assert conn.execute(TAKE_OVER).rowcount == 1
        conn.commit()
    finally:
        conn.close()


def txn_ids(config: Any) -> set[str]:
    conn = raw_connect(config)
    try:
        return {row[0] for row in conn.execute("SELECT txn_id FROM transactions").fetchall()}
    finally:
        conn.close()


@pytest.mark.parametrize("writer", ["thread", "process"])
@pytest_twisted.ensureDeferred
async def test_after_a_takeover_no_write_of_this_node_commits_and_it_steps_down_at_once(config, registry, clock,
                                                                                         writer):
    journal = await open_journal(dataclasses.replace(config, writer=writer), reactor, registry=registry, clock=clock)
    lost: list[LeaseLost] = []
    lease = NodeLease(journal, ReactorClock(), on_lost=lost.append, me=holder("first"))  # no heartbeat runs
    try:
        await lease.acquire()
        before = await journal.create_transaction(sale(order_id="before"))
        await journal.reserve_numbers("rrn:bank_a", 100)
        take_over(config)
        refused = [journal.create_transaction(sale(order_id=f"after-{n}")) for n in range(3)]
        refused.append(journal.reserve_numbers("rrn:bank_a", 100))
        errors = [await failure_of(d) for d in refused]
        assert all(isinstance(e, LeaseLost) for e in errors), errors
        assert "this node (first) lost the journal lease; it is now held by kswitch node other-node (host host-b" \
               in str(errors[0]) and "nothing of this write was committed" in str(errors[0])
        assert txn_ids(config) == {before.txn_id}
        conn = raw_connect(config)
        try:
            assert conn.execute("SELECT value FROM counters WHERE name = 'rrn:bank_a'").fetchall() == [(100,)]
        finally:
            conn.close()
        assert len(lost) == 1 and "now held by kswitch node other-node" in str(lost[0])  # no heartbeat was needed
        assert await lease.release() is False  # nothing to give up, and no error from the writer's fence
    finally:
        await journal.close()


@pytest_twisted.ensureDeferred
async def test_the_lease_own_statements_pass_the_fence(journal, config, registry, clock):
    """The acquire runs before there is an owner to check; renewals and the release at a clean stop are fenced,
    and pass, as the row is this node's; a node that takes the lease over writes at once."""
    lost: list[LeaseLost] = []
    lease = NodeLease(journal, ReactorClock(), on_lost=lost.append, me=holder("first"))
    await lease.acquire()
    await journal.renew_lease("first", 15.0)
    await journal.create_transaction(sale(order_id="first"))
    assert await lease.release() is True
    other = await open_journal(config, reactor, registry=registry, clock=clock)
    try:
        await other.acquire_lease(holder("second", host="host-b"), 15.0)
        await other.create_transaction(sale(order_id="second"))
        error = await failure_of(journal.create_transaction(sale(order_id="late")))
        assert isinstance(error, LeaseLost) and "now held by kswitch node second" in str(error)
        assert lost == []  # released: what the fence refuses after that is no loss to report
    finally:
        await other.close()


# The committer itself: the batch's paths (pipelined, replayed unit by unit) and what a takeover waits for.


def _insert(name: str) -> Any:
    def unit(db: Db) -> int:
        return db.execute("INSERT INTO counters (name, value) VALUES (:name, 1)", {"name": name})

    return unit


def _fail(db: Db) -> None:
    raise StorageError("a unit that fails: the batch is replayed unit by unit")


@pytest.fixture
def fenced(backend: str, tmp_path: Path) -> Iterator[tuple[Committer, Any]]:
    """A committer fenced as the writers are, on a migrated journal whose lease ``first`` holds, and a function
    returning a new connection of the test's own to the same database."""
    schema = f"kswitch_test_{uuid.uuid4().hex[:16]}"
    if backend == "postgresql":
        require_postgres()
        chosen: Any = PostgresBackend(PG_DSN, schema)

        def connect() -> Any:
            return pg_connect(schema)
    else:
        chosen = SQLiteBackend(tmp_path / "journal.sqlite3")

        def connect() -> Any:
            return sqlite3.connect(chosen.path, isolation_level=None, timeout=10)
    shared: dict[Any, Any] = {}
    committer = Committer(chosen.open_writer, chosen.name, shared, fence=fence)
    run(committer.open(), migrate)
    now = int(time.time() * 1_000_000)
    outcomes, committed = committer.commit([lambda db: acquire(db, holder("first"), now=now, ttl=15_000_000)])
    assert committed and outcomes[0][0], outcomes
    shared[SHARED_OWNER] = "first"
    yield committer, connect
    committer.close()
    if backend == "postgresql":
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def counter_names(connect: Any) -> set[str]:
    conn = connect()
    try:
        return {row[0] for row in conn.execute("SELECT name FROM counters").fetchall()}
    finally:
        conn.close()


def test_a_batch_after_a_takeover_is_rolled_back_whole_on_every_path(fenced):
    committer, connect = fenced
    assert committer.commit([_insert("a"), _insert("b")])[1]
    conn = connect()
    try:
        assert conn.execute(TAKE_OVER).rowcount == 1
    finally:
        conn.close()
    db = committer.db
    for units in ([_insert("c"), _insert("d")], [_insert("e"), _fail, _insert("f")]):  # pipelined, then replayed
        outcomes, committed = committer.commit(units)
        assert not committed
        assert [type(failure.value) for ok, failure in outcomes if not ok] == [LeaseLost] * len(units)
    assert counter_names(connect) == {"a", "b"}
    assert committer.db is db  # the connection is sound: kept


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite: the writer's BEGIN IMMEDIATE holds off every writer
def test_a_takeover_waits_for_a_fenced_batch_in_progress_on_postgres(fenced):
    """The fence reads the lease row FOR SHARE: a takeover's UPDATE from another node waits until the batch has
    committed (seen by the server: the UPDATE's backend waits on a lock), and the next batch sees the new owner."""
    committer, connect = fenced
    inside, go_on = threading.Event(), threading.Event()

    def held(db: Db) -> None:
        db.execute("INSERT INTO counters (name, value) VALUES ('held', 1)")  # read: the fence has run before it
        inside.set()
        assert go_on.wait(timeout=30)

    batch: list[Any] = []
    worker = threading.Thread(target=lambda: batch.append(committer.commit([held])), daemon=True)
    worker.start()
    assert inside.wait(timeout=30)
    taker, watcher = connect(), connect()
    taken: list[int] = []
    try:
        taker_pid = taker.execute("SELECT pg_backend_pid()").fetchone()[0]
        taking = threading.Thread(target=lambda: taken.append(taker.execute(TAKE_OVER).rowcount), daemon=True)
        taking.start()
        waits = None
        for _ in range(3000):  # until the server says it waits, or the UPDATE is done: not a timing claim
            row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                  (taker_pid,)).fetchone()
            if row is not None and row[0] == "Lock" or not taking.is_alive():
                waits = taking.is_alive()
                break
            time.sleep(0.01)
        go_on.set()
        worker.join(timeout=30)
        taking.join(timeout=30)
        assert waits is True, "the takeover did not wait for the batch that holds the lease row"
        assert batch and batch[0][1] and taken == [1]  # the batch committed, then the takeover did
        outcomes, committed = committer.commit([_insert("after")])
        assert not committed and isinstance(outcomes[0][1].value, LeaseLost)
        assert counter_names(connect) == {"held"}
    finally:
        go_on.set()
        taker.close()
        watcher.close()

