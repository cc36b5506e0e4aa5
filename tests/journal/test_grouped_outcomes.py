"""On PostgreSQL a batch's payment outcomes reach the server as one UPDATE per shape of change (`Db.update_later`),
and each must still commit exactly as if it had been alone: its row, its audit row, its refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from switch.domain.status import Kind, Status
from switch.journal import Journal
from switch.journal.errors import CardDataRefused, TransitionRefused
from tests.journal.conftest import raw_connect
from tests.journal.test_journal import VISA, sale
from tests.journal.test_journal_runtime import _approvals, _approved_alone_once, _in_one_batch


@pytest.fixture
def sent(journal: Journal, backend: str) -> Iterator[list[str]]:
    """The statements the writer's connection sends, as the server gets them."""
    if backend != "postgresql":
        pytest.skip("SQLite runs each statement in the writer's own process: nothing is grouped")
    db = journal._writer._committer.db
    statements: list[str] = []
    execute = db.conn.execute
    db.conn.execute = lambda sql, *args, **kwargs: (statements.append(str(sql)), execute(sql, *args, **kwargs))[1]
    try:
        yield statements
    finally:
        del db.conn.execute


def updates(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.startswith("UPDATE transactions")]


def batch_of(*moves: Any) -> Any:
    def moving() -> list[Any]:
        return [move() for move in moves]
    moving.refused = tuple(i for i, move in enumerate(moves) if getattr(move, "refused", False))  # type: ignore[attr-defined]
    return moving


def refused(move: Any) -> Any:
    move.refused = True
    return move


@pytest_twisted.ensureDeferred
async def test_a_batchs_outcomes_are_one_update(journal: Journal, sent: list[str]) -> None:
    txns = [await journal.create_transaction(sale(order_id=f"g-{n}")) for n in range(4)]
    sent.clear()
    moved = await _in_one_batch(journal, _approvals(journal, txns))
    assert len(updates(sent)) == 1
    for txn, result in zip(txns, moved):
        await _approved_alone_once(journal, txn, result)


@pytest_twisted.ensureDeferred
async def test_outcomes_of_two_shapes_are_an_update_each_and_a_declined_card_is_forgotten(
        journal: Journal, sent: list[str], config: Any) -> None:
    approved, declined = [await journal.create_transaction(sale(order_id=f"h-{n}")) for n in range(2)]
    sent.clear()
    moved = await _in_one_batch(journal, batch_of(
        lambda: journal.transition(approved.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED,
                                   response_code="00", auth_code="A1B2C3", amount_authorized=1250),
        lambda: journal.transition(declined.txn_id, expected_from={Status.PENDING}, to=Status.DECLINED,
                                   response_code="05", reason="do_not_honour", forget_card=True),
    ))
    assert len(updates(sent)) == 2
    assert [(m.status, m.response_code, m.version) for m in moved] == [
        (Status.APPROVED, "00", 2), (Status.DECLINED, "05", 2)]
    assert (moved[0].auth_code, moved[0].amount_authorized, moved[1].reason) == ("A1B2C3", 1250, "do_not_honour")
    conn = raw_connect(config)
    try:
        rows = conn.execute("SELECT txn_id, previous_status, pan_ciphertext IS NULL FROM transactions "
                            "WHERE txn_id IN (%s, %s) ORDER BY order_id", (approved.txn_id, declined.txn_id)).fetchall()
    finally:
        conn.close()
    assert rows == [(approved.txn_id, "pending", False), (declined.txn_id, "pending", True)]


@pytest_twisted.ensureDeferred
async def test_a_second_outcome_for_one_payment_in_a_batch_is_refused_as_if_it_came_after(
        journal: Journal, sent: list[str]) -> None:
    """One UPDATE never moves a row twice: the second outcome waits for the first's statement, finds the
    payment approved, and is refused alone."""
    txn = await journal.create_transaction(sale(order_id="i-0"))
    results = await _in_one_batch(journal, batch_of(
        lambda: journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED,
                                   response_code="00", amount_authorized=1250),
        refused(lambda: journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.DECLINED,
                                           response_code="05", amount_authorized=0)),
    ))
    assert results[0].status == Status.APPROVED
    assert isinstance(results[1], TransitionRefused) and results[1].current == Status.APPROVED
    stored = await journal.get_transaction(txn.txn_id)
    assert (stored.status, stored.version) == (Status.APPROVED, 2)
    assert [(t.from_status, t.to_status) for t in await journal.transitions(txn.txn_id)] == [
        (None, Status.PENDING), (Status.PENDING, Status.APPROVED)]


@pytest_twisted.ensureDeferred
async def test_a_statement_after_queued_outcomes_sees_them(journal: Journal, sent: list[str]) -> None:
    """A unit's own statement goes after the outcomes queued before it: a capture in the same batch as the
    approval it needs finds the payment approved, with no replay."""
    txn = await journal.create_transaction(sale(order_id="j-0", kind=Kind.AUTHORIZATION))
    sent.clear()
    approved, captured = await _in_one_batch(journal, batch_of(
        lambda: journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED,
                                   response_code="00", amount_authorized=1250),
        lambda: journal.transition(txn.txn_id, expected_from={Status.APPROVED}, to=Status.CAPTURED,
                                   expected_version=2, amount_captured=1250),
    ))
    assert (approved.status, captured.status, captured.version) == (Status.APPROVED, Status.CAPTURED, 3)
    assert "ROLLBACK" not in sent
    assert len(updates(sent)) == 2


@pytest_twisted.ensureDeferred
async def test_an_outcome_holding_a_card_number_is_refused_alone(journal: Journal, sent: list[str]) -> None:
    txns = [await journal.create_transaction(sale(order_id=f"k-{n}")) for n in range(3)]
    results = await _in_one_batch(journal, batch_of(
        *(lambda t=t: journal.transition(t.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED,
                                         response_code="00", amount_authorized=1250, amount_captured=1250,
                                         bank_fee=7, merchant_fee=31) for t in txns[:2]),
        refused(lambda: journal.transition(txns[2].txn_id, expected_from={Status.PENDING}, to=Status.DECLINED,
                                           reason=f"card {VISA}")),
    ))
    assert isinstance(results[2], CardDataRefused)
    for txn, result in zip(txns[:2], results[:2]):
        await _approved_alone_once(journal, txn, result)
    assert (await journal.get_transaction(txns[2].txn_id)).status == Status.PENDING


@pytest_twisted.ensureDeferred
async def test_the_grouped_update_is_planned_each_time_not_prepared(journal: Journal, sent: list[str]) -> None:
    """psycopg prepares a statement run five times; the server would then keep the plan it made while the table
    was small (a scan of every row), and every batch's outcomes would read the whole table as it grows."""
    for n in range(8):
        txns = [await journal.create_transaction(sale(order_id=f"p-{n}-{m}")) for m in range(2)]
        await _in_one_batch(journal, _approvals(journal, txns))
    db = journal._writer._committer.db
    prepared = [row["statement"] for row in db.conn.execute("SELECT statement FROM pg_prepared_statements")]
    assert not [statement for statement in prepared if "jsonb_populate_recordset" in statement]
    assert len(updates(sent)) >= 8
