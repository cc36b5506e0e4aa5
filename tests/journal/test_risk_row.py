"""A screening journalled in its payment's own row (migration 13): the decision `status` shows, and the
counts, which the writer's memory holds exactly across a rolled-back batch, a restart, a SIGKILL (rebuilt
from the payments' rows) and a change made beside it by SQL (migration 14 on PostgreSQL)."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
from dataclasses import dataclass
from operator import methodcaller
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor

from switch.journal import JournalConfig, open_journal
from switch.journal.ids import new_txn_id
from switch.journal.refusals import DuplicateIdempotencyKey
from switch.journal.risk import Decision, Window
from switch.journal.riskmemo import _SCAN
from tests.journal.conftest import raw_connect
from tests.journal.test_journal import sale

EXPIRES = 10**18
HORIZON = 10**15  # µs: every payment of these tests is inside the window


@dataclass(frozen=True)
class Screened:
    journal_as: str = "send"


def screen(name: str, amount: int = 10):
    """What the stage's unit does for a counting rule: read the counter, add the payment, record the
    decision (with what it added) for the payment's row.  (A unit is data, as the journal's writer gets it.)"""
    return functools.partial(_screen, name, amount)


def _screen(name: str, amount: int, ledger: Any) -> Screened:
    window = ledger.lookup((), [name], HORIZON)[1][name]
    window.add(0, 1, amount, 0, EXPIRES)
    matches = [{"rule": "vel", "kind": "velocity", "action": "review", "mode": "shadow", "seen": {"count": 1}}]
    ledger.record("unused", Decision("allow", None, matches, (), [(name, 0, 1, amount, EXPIRES)]), [window], True)
    return Screened()


def counted(name: str):
    return functools.partial(_counted, name)


def _counted(name: str, ledger: Any) -> tuple[int, int]:
    return ledger.lookup((), [name], HORIZON)[1][name].total(0)


async def pay(journal: Any, name: str, **overrides: Any) -> Any:
    """A payment screened and sent: the commit answers None for it (the caller holds what it needs), so it is
    read back."""
    new = sale(txn_id=new_txn_id(), **overrides)
    sent, _ = await journal.create_screened(new, ("0200", {"3": "000000"}), screen(name), "risk_declined")
    assert sent is None
    return await journal.get_transaction(new.txn_id)


@pytest_twisted.ensureDeferred
async def test_the_decision_is_in_the_payments_row_and_status_reads_it(journal, config) -> None:
    txn = await pay(journal, "vel:card:row")
    decision = await journal.risk_decision(txn.txn_id)
    assert decision == {"action": "allow", "rule": None, "matches": [
        {"rule": "vel", "kind": "velocity", "action": "review", "mode": "shadow", "seen": {"count": 1}}]}
    assert await journal.risk_unit(counted("vel:card:row"), 2.0) == (1, 10)
    conn = raw_connect(config)
    try:
        decisions = conn.execute("SELECT count(*) FROM risk_decisions").fetchall()[0][0]
        windows = conn.execute("SELECT count(*) FROM risk_windows").fetchall()[0][0]
    finally:
        conn.close()
    assert decisions == 0  # no row of its own
    assert windows == 0  # the count is in the payment's row, on either backend


@pytest_twisted.ensureDeferred
async def test_a_payment_refused_in_its_batch_takes_its_count_back_and_a_restart_finds_the_rest(
        journal, config, clock) -> None:
    """The second payment reuses the first one's idempotency key: its unit fails after counting, the batch
    is rolled back and replayed; the writer's memory must lose that count and keep the others, and a
    writer started afresh must rebuild the same from the payments' rows."""
    name = "vel:card:batch"
    outcomes = await defer.DeferredList([
        defer.ensureDeferred(pay(journal, name, idempotency_key="k1", request_hash=b"h" * 32, order_id="o1")),
        defer.ensureDeferred(pay(journal, name, idempotency_key="k1", request_hash=b"h" * 32, order_id="o2")),
        defer.ensureDeferred(pay(journal, name, order_id="o3"))], consumeErrors=True)
    assert [ok for ok, _ in outcomes] == [True, False, True]
    outcomes[1][1].trap(DuplicateIdempotencyKey)
    assert await journal.risk_unit(counted(name), 2.0) == (2, 20)
    await pay(journal, name, order_id="o4")
    assert await journal.risk_unit(counted(name), 2.0) == (3, 30)
    again = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        assert await again.risk_unit(counted(name), 3.0) == (3, 30)
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_a_counter_row_written_beside_journalled_counts_is_not_counted_twice(journal, config, clock) -> None:
    """A counter's row written after payments counted in their rows (a take-back, here) holds those counts:
    a writer started afresh adds only what came after it (``through``)."""
    name = "vel:card:mixed"
    await pay(journal, name, order_id="o1")
    await pay(journal, name, order_id="o2")
    await journal.risk_unit(methodcaller("take_back", [(name, 1, 10, 0)]), 2.0)
    await pay(journal, name, order_id="o3")
    assert await journal.risk_unit(counted(name), 3.0) == (2, 20)
    await journal.close()
    again = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        assert await again.risk_unit(counted(name), 3.0) == (2, 20)
    finally:
        await again.close()


_KILLED = """
import os, pickle, signal, sys
from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from switch.journal import open_journal
from tests.journal.test_risk_row import pay

async def main(reactor):
    config = pickle.loads(open(sys.argv[1], "rb").read())
    journal = await open_journal(config, reactor, registry=CollectorRegistry(), clock=lambda: 1.0)
    for i in range(5):
        await pay(journal, "vel:card:killed", order_id=f"o{i}")
    os.kill(os.getpid(), signal.SIGKILL)  # no clean close: nothing but the committed rows is left

task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


@pytest_twisted.ensureDeferred
async def test_counts_survive_a_sigkill(config: JournalConfig, clock, tmp_path: Path) -> None:
    kept = tmp_path / "config.pickle"
    kept.write_bytes(pickle.dumps(config))
    done = subprocess.run([sys.executable, "-c", _KILLED, str(kept)], cwd=Path(__file__).parents[2], timeout=60,
                          capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    again = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        assert await again.risk_unit(counted("vel:card:killed"), 2.0) == (5, 50)
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_explain_sees_the_counts_journalled_in_payments_rows(journal) -> None:
    """`kswitch risk explain` reads beside the writer, on a reader's connection: it must add the counts
    payments journalled in their rows to the counters' rows, as the writer does."""
    await pay(journal, "vel:card:explained", order_id="o1")
    await pay(journal, "vel:card:explained", order_id="o2")
    assert await journal.risk_dry_run(counted("vel:card:explained"), 2.0) == (2, 20)


def _beside(config: JournalConfig, statement: str, params: tuple[Any, ...]) -> None:
    """What an operator runs by hand on a connection of their own: tables named with their schema and the
    server's default search path on PostgreSQL, so the trigger must find its table by itself."""
    conn = raw_connect(config)
    try:
        if config.backend == "postgresql":
            conn.execute('RESET search_path')
            statement = statement.replace("risk_", f'"{config.pg_schema}".risk_').replace("?", "%s")
        conn.execute(statement, params)
        if config.backend == "sqlite":
            conn.commit()
    finally:
        conn.close()


def _risk_version(config: JournalConfig) -> int:
    conn = raw_connect(config)
    try:
        return int(conn.execute("SELECT version FROM risk_changes").fetchall()[0][0])
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_change_made_by_hand_beside_the_writer_is_seen_at_its_next_batch(journal, config) -> None:
    """The writer counts in its memory; an operator resets a counter and blocks a card by SQL on their own
    connection. The writer's next unit must count from the reset and see the block."""
    name, card = "vel:card:byhand", methodcaller("blocked", [("card", "ef" * 16)])
    await pay(journal, name, order_id="o1")
    await pay(journal, name, order_id="o2")
    assert await journal.risk_unit(counted(name), 2.0) == (2, 20)
    assert await journal.risk_unit(card, 2.0) == []
    _beside(config, "INSERT INTO risk_windows (name, slots, expires_at, through) VALUES (?, '', ?, ?)",
            (name, EXPIRES, 10**17))  # a row holding every add numbered so far: none counted
    _beside(config, "INSERT INTO risk_blocklist (kind, value, shown, source, created_at, expires_at) "
            "VALUES ('card', ?, '400000******0259', 'operator bob', 0, NULL)", ("ef" * 16,))
    assert await journal.risk_unit(counted(name), 3.0) == (0, 0)
    assert [e.source for e in await journal.risk_unit(card, 3.0)] == ["operator bob"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_the_writers_own_risk_rows_do_not_make_it_forget(journal, config) -> None:
    """PostgreSQL: the writer's own counter rows and blocks leave the version alone (it would otherwise read
    every live counter again after each bank decline); any other connection's change bumps it."""
    name = "vel:card:own"
    await pay(journal, name, order_id="o1")
    await journal.risk_unit(methodcaller("take_back", [(name, 1, 10, 0)]), 2.0)
    assert await journal.risk_block("card", "ab" * 16, "400000******0259", "operator alice")
    assert _risk_version(config) == 0
    _beside(config, "DELETE FROM risk_blocklist WHERE value = ?", ("ab" * 16,))
    assert _risk_version(config) == 1
    assert await journal.risk_unit(methodcaller("blocked", [("card", "ab" * 16)]), 3.0) == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_the_memory_is_rebuilt_from_the_last_windows_payments_without_reading_the_whole_table(
        journal, config) -> None:
    """PostgreSQL: the writer's memory is rebuilt from the payments created in the last window; with a table
    of older payments that must not read them all (a block range index on created_at, migration 14)."""
    await pay(journal, "vel:card:brin", order_id="o1")
    conn = raw_connect(config)
    try:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = "
            "'transactions' AND column_name NOT IN ('txn_id', 'order_id', 'created_at')", (config.pg_schema,))]
        listed = ", ".join(columns)
        conn.execute(f"INSERT INTO transactions (txn_id, order_id, created_at, {listed}) SELECT 'old' || g, 'old' || g, "
                     f"g, {listed} FROM transactions, generate_series(1, 50000) AS g")
        conn.execute("ANALYZE transactions")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN " + _SCAN.replace(":since", "%s"), (10**15,)))
    finally:
        conn.close()
    assert "transactions_created_brin" in plan, plan


@pytest_twisted.ensureDeferred
async def test_counts_a_writer_kept_in_counter_rows_alone_still_count(journal, config) -> None:
    """Before migration 14 PostgreSQL's writer kept every count in its counters' rows (``through`` 0) and
    none in payments' rows: a writer counting in memory must start from those rows and add only what
    it journals after them."""
    name = "vel:card:before14"
    window = Window(name, [])
    for _ in range(3):
        window.add(0, 1, 10, 0, EXPIRES)
    _beside(config, "INSERT INTO risk_windows (name, slots, expires_at, through) VALUES (?, ?, ?, 0)",
            (name, window.packed(), EXPIRES))
    assert await journal.risk_unit(counted(name), 2.0) == (3, 30)
    await pay(journal, name, order_id="o1")
    assert await journal.risk_unit(counted(name), 2.0) == (4, 40)
