"""Reconciliation results, their exceptions and the operators' event, journalled in one commit. Both backends."""

from __future__ import annotations

import pytest
import pytest_twisted

from switch.journal import Journal, Kind, Status
from switch.journal.dayend import OPERATORS, ExceptionDraft
from switch.journal.errors import InvalidRecord
from switch.journal.models import EventDraft
from tests.journal.test_journal import failure_of, sale
from tests.journal.test_operations import approved, child

OURS = {"debits_count": 2, "debits_amount": 3_000, "net": 3_000}
THEIRS = {"debits_count": 1, "debits_amount": 1_000, "net": 1_000}


@pytest_twisted.ensureDeferred
async def test_a_result_its_exceptions_and_the_event_are_one_record(journal: Journal) -> None:
    txn = await journal.create_transaction(sale())
    balanced = await journal.record_reconciliation("bank_a", "2026-06-14", "USD", method="message",
                                                   result="in_balance", switch_totals=OURS, bank_totals=OURS)
    off = await journal.record_reconciliation(
        "bank_a", "2026-06-15", "USD", method="message", result="out_of_balance", switch_totals=OURS,
        bank_totals=THEIRS, exceptions=[ExceptionDraft("totals_mismatch", "debits_count: switch 2, bank 1"),
                                        ExceptionDraft("missing_at_bank", "explains it", txn.txn_id)],
        event=EventDraft("reconciliation.out_of_balance", {"connector": "bank_a"}))
    assert off > balanced
    newest, oldest = await journal.reconciliations("bank_a")
    assert (newest.reconciliation_id, newest.result, newest.switch_totals, newest.bank_totals) == (
        off, "out_of_balance", OURS, THEIRS)
    assert [(e.kind, e.txn_id) for e in newest.exceptions] == [("totals_mismatch", None), ("missing_at_bank", txn.txn_id)]
    assert (oldest.result, oldest.exceptions) == ("in_balance", ())
    assert [r.reconciliation_id for r in await journal.reconciliations(business_date="2026-06-14")] == [balanced]
    [event] = await journal.events_after([OPERATORS], 0)
    assert (event.type, event.payload) == ("reconciliation.out_of_balance",
                                           {"connector": "bank_a", "reconciliation_id": off})


@pytest_twisted.ensureDeferred
async def test_an_unknown_result_or_transaction_records_nothing(journal: Journal) -> None:
    with pytest.raises(ValueError, match="result must be one of"):
        await journal.record_reconciliation("bank_a", "2026-06-15", "USD", method="message", result="fine",
                                            switch_totals=OURS, bank_totals=None)
    failure = await failure_of(journal.record_reconciliation(
        "bank_a", "2026-06-15", "USD", method="message", result="out_of_balance", switch_totals=OURS,
        bank_totals=THEIRS, exceptions=[ExceptionDraft("missing_at_bank", "no such row", "T-nope")],
        event=EventDraft("reconciliation.out_of_balance", {})))
    assert failure is not None
    assert await journal.reconciliations() == [] and await journal.events_after([OPERATORS], 0) == []


@pytest_twisted.ensureDeferred
async def test_a_void_on_the_next_date_is_classified_with_its_parent_from_the_day_before(journal: Journal) -> None:
    await journal.open_business_days({"bank_a": "2026-11-28"})
    parent_id = await approved(journal, Kind.SALE, 5000)
    await journal.cutover("bank_a", "2026-11-29", by="bank")
    _, void = await journal.begin_operation(parent_id, child(parent_id, Kind.VOID, 5000), allowed=(Status.APPROVED,))
    await journal.finish_operation(void.txn_id, to=Status.APPROVED)
    [moved] = await journal.day_movements("2026-11-29", "bank_a")  # the parent's row is not dated the 29th
    assert (moved.txn_id, moved.kind, moved.reversal, moved.amount, moved.original) == (
        void.txn_id, "debit", True, 5000, parent_id)
    [sold] = await journal.day_movements("2026-11-28")
    assert (sold.txn_id, sold.reversal) == (parent_id, False)
    with pytest.raises(InvalidRecord, match="YYYY-MM-DD"):
        await journal.day_movements("28-11-2026")
