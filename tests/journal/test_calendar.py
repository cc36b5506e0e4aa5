"""Business dates: rows are stamped with their connector's open date when created and when
reversed; a cutover closes one date and opens the next in one commit. Both backends."""

from __future__ import annotations

import pytest
import pytest_twisted

from switch.journal import Journal, Kind, Status
from switch.journal.errors import CutoverRefused, InvalidRecord
from tests.journal.test_journal import failure_of, sale
from tests.journal.test_operations import approved, child


@pytest_twisted.ensureDeferred
async def test_rows_carry_the_open_date_and_a_cutover_moves_new_rows_to_the_next(journal: Journal) -> None:
    assert await journal.open_business_days({"bank_a": "2026-11-28"}) == {"bank_a": "2026-11-28"}
    before = await journal.create_transaction(sale())
    closed = await journal.cutover("bank_a", "2026-11-29", by="operator")
    after = await journal.create_transaction(sale(order_id="order-2", stan="000124"))

    assert (before.business_date, after.business_date) == ("2026-11-28", "2026-11-29")
    assert (closed.business_date, closed.state, closed.closed_by) == ("2026-11-28", "closed", "operator")
    days = await journal.business_days("bank_a")
    assert [(d.business_date, d.state) for d in days] == [("2026-11-29", "open"), ("2026-11-28", "closed")]
    assert [r.txn_id for r in await journal.day_rows("2026-11-28")] == [before.txn_id]
    assert [r.txn_id for r in await journal.day_rows("2026-11-29", "bank_a")] == [after.txn_id]


@pytest_twisted.ensureDeferred
async def test_opening_again_keeps_the_open_date(journal: Journal) -> None:
    await journal.open_business_days({"bank_a": "2026-11-28"})
    await journal.cutover("bank_a", "2026-11-29", by="bank")
    assert await journal.open_business_days({"bank_a": "2026-11-30", "bank_b": "2026-11-30"}) == {
        "bank_a": "2026-11-29", "bank_b": "2026-11-30"}


@pytest_twisted.ensureDeferred
async def test_a_reversal_is_dated_when_it_is_acknowledged(journal: Journal) -> None:
    await journal.open_business_days({"bank_a": "2026-11-28"})
    txn = await journal.create_transaction(sale())
    await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.REVERSAL_PENDING)
    await journal.cutover("bank_a", "2026-11-29", by="schedule")
    reversed_ = await journal.transition(txn.txn_id, expected_from=(Status.REVERSAL_PENDING,), to=Status.REVERSED)

    assert (reversed_.business_date, reversed_.reversal_business_date) == ("2026-11-28", "2026-11-29")
    assert [r.txn_id for r in await journal.day_rows("2026-11-29")] == [txn.txn_id]


@pytest_twisted.ensureDeferred
async def test_operations_get_their_own_date_and_the_banks_settlement_date_wins(journal: Journal) -> None:
    await journal.open_business_days({"bank_a": "2026-11-28"})
    parent_id = await approved(journal, Kind.AUTHORIZATION, 5000)
    await journal.cutover("bank_a", "2026-11-29", by="bank")
    _, capture = await journal.begin_operation(parent_id, child(parent_id, Kind.CAPTURE, 4000),
                                               allowed=(Status.APPROVED,))
    assert capture.business_date == "2026-11-29"
    _, capture = await journal.finish_operation(capture.txn_id, to=Status.APPROVED, business_date="2026-11-30")
    assert capture.business_date == "2026-11-30"


@pytest_twisted.ensureDeferred
async def test_cutover_refusals(journal: Journal) -> None:
    with pytest.raises(CutoverRefused, match="no open business date"):
        await journal.cutover("bank_a", "2026-11-29", by="operator")
    await journal.open_business_days({"bank_a": "2026-11-28"})
    with pytest.raises(CutoverRefused, match="not after 2026-11-28"):
        await journal.cutover("bank_a", "2026-11-28", by="operator")
    assert journal.business_date("bank_a") == "2026-11-28"
    assert isinstance(await failure_of(journal.cutover("bank_a", "29/11/2026", by="operator")), InvalidRecord)
    with pytest.raises(InvalidRecord, match="YYYY-MM-DD"):
        await journal.day_rows("2026-13-01")
