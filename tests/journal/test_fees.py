"""Fees journalled in the same commit as the movement of money (switch.journal.feebook), on both backends."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from switch.domain.fees import FeePlan, FeeSchedule, RefundEffect
from switch.journal import CardData, Journal, JournalConfig, Kind, Status, feebook, open_journal
from tests.journal.conftest import raw_connect
from tests.journal.test_journal import sale
from tests.journal.test_operations import approved, child

SCHEDULE = FeeSchedule(
    banks={"bank_a": [FeePlan(basis_points=100, schemes=frozenset({"mastercard"})),
                      FeePlan(basis_points=50, minimum={"EUR": 10}, on_refund=RefundEffect.KEEP)]},
    merchants={"m1": [FeePlan(basis_points=250, fixed={"EUR": 3})]},
)


@pytest_twisted.async_yield_fixture
async def fees_journal(config: JournalConfig, registry: Any, clock: Any) -> Any:
    opened: Journal = await open_journal(dataclasses.replace(config, fees=SCHEDULE), reactor,
                                         registry=registry, clock=clock)
    yield opened
    await opened.close()


async def _refund(journal: Journal, parent_id: str, amount: int, to: Status = Status.APPROVED):
    _, refund = await journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, amount),
                                              allowed=(Status.APPROVED, Status.PARTIALLY_REFUNDED))
    return await journal.finish_operation(refund.txn_id, to=to, response_code="00")


def _committed(config: JournalConfig, parent_id: str) -> list[tuple[str, str, int, int]]:
    conn = raw_connect(config)
    try:
        rows = conn.execute(
            "SELECT kind, status, bank_fee, merchant_fee FROM transactions WHERE txn_id = '" + parent_id +
            "' OR parent_txn_id = '" + parent_id + "' ORDER BY created_at, txn_id").fetchall()
    finally:
        conn.close()
    return [tuple(r) for r in rows]


@pytest_twisted.ensureDeferred
async def test_partial_refunds_reverse_the_merchant_fee_exactly_and_keep_the_bank_fee(fees_journal, config):
    sale_id = await approved(fees_journal, Kind.SALE, 1001)
    sale = await fees_journal.get_transaction(sale_id)
    assert (sale.bank_fee, sale.merchant_fee) == (10, 28)  # 5.005 -> 5 raised to 10; 25.025 -> 25 + 3
    declined_parent, declined = await _refund(fees_journal, sale_id, 100, to=Status.DECLINED)
    assert (declined.bank_fee, declined.merchant_fee) == (0, 0) and declined_parent.amount_refunded == 0
    reversals = []
    for amount in (333, 333, 335):
        _, refund = await _refund(fees_journal, sale_id, amount)
        reversals.append((refund.bank_fee, refund.merchant_fee))
    assert reversals == [(0, -9), (0, -10), (0, -9)]  # cumulative: 9.31 -> 9, 18.63 -> 19, then the rest
    rows = _committed(config, sale_id)
    assert sum(r[3] for r in rows) == 0 and sum(r[2] for r in rows) == 10
    assert rows[0] == ("sale", "refunded", 10, 28)


@pytest_twisted.ensureDeferred
async def test_a_bare_preauthorization_has_no_fee_and_its_capture_does(fees_journal, config):
    auth_id = await approved(fees_journal, Kind.AUTHORIZATION, 5000)
    _, capture = await fees_journal.begin_operation(auth_id, child(auth_id, Kind.CAPTURE, 4000),
                                                    allowed=(Status.APPROVED,))
    assert (capture.bank_fee, capture.merchant_fee) == (0, 0)  # not before the money moves
    _, capture = await fees_journal.finish_operation(capture.txn_id, to=Status.APPROVED, response_code="00")
    assert _committed(config, auth_id) == [("authorization", "captured", 0, 0), ("capture", "approved", 20, 103)]


@pytest_twisted.ensureDeferred
async def test_a_sale_reversed_after_its_approval_gives_its_fees_back(fees_journal, config):
    sale_id = await approved(fees_journal, Kind.SALE, 2000)
    await fees_journal.transition(sale_id, expected_from=(Status.APPROVED,), to=Status.REVERSAL_PENDING)
    assert _committed(config, sale_id) == [("sale", "reversal_pending", 10, 53)]
    await fees_journal.transition(sale_id, expected_from=(Status.REVERSAL_PENDING,), to=Status.REVERSED)
    assert _committed(config, sale_id) == [("sale", "reversed", 0, 0)]


@pytest_twisted.ensureDeferred
async def test_the_first_matching_rule_applies_by_card_scheme(fees_journal):
    txn = await fees_journal.create_transaction(sale(amount=2000, card=CardData("5555555555554444", "2712")))
    done = await fees_journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED,
                                         amount_authorized=2000, amount_captured=2000)
    assert (done.bank_fee, done.merchant_fee) == (20, 53)  # the mastercard rule: 1.00 %


@pytest_twisted.ensureDeferred
async def test_fees_passed_with_the_approval_are_the_ones_charged_after_it_and_audited(fees_journal, config):
    card = CardData("5555555555554444", "2712")
    charged_after = await fees_journal.create_transaction(sale(amount=2000, card=card))
    after = await fees_journal.transition(charged_after.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED,
                                          amount_authorized=2000, amount_captured=2000)
    fees = fees_journal.sale_fees("bank_a", "m1", "EUR", card.masked, 2000)
    assert fees == {"bank_fee": after.bank_fee, "merchant_fee": after.merchant_fee} == {"bank_fee": 20,
                                                                                        "merchant_fee": 53}
    charged_with = await fees_journal.create_transaction(sale(amount=2000, card=card))
    done = await fees_journal.transition(charged_with.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED,
                                         amount_authorized=2000, amount_captured=2000, **fees)
    assert (done.bank_fee, done.merchant_fee) == (20, 53)
    assert _committed(config, done.txn_id) == [("sale", "approved", 20, 53)]
    audit = (await fees_journal.transitions(done.txn_id))[-1]
    assert (audit.to_status, audit.changes["bank_fee"], audit.changes["merchant_fee"]) == (Status.APPROVED, 20, 53)


@pytest_twisted.ensureDeferred
async def test_fees_a_transition_sets_are_not_charged_again_even_when_zero(fees_journal, config):
    """The caller's fees are the sale's (`Journal.sale_fees` reads the schedule the writer holds): the writer does
    not compute them again, so an approval's outcome needs no second statement, whatever its fees come to."""
    card = CardData("5555555555554444", "2712")
    txn = await fees_journal.create_transaction(sale(amount=2000, card=card))
    done = await fees_journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED,
                                         amount_authorized=2000, amount_captured=2000, bank_fee=0, merchant_fee=0)
    assert (done.bank_fee, done.merchant_fee) == (0, 0)
    assert _committed(config, done.txn_id) == [("sale", "approved", 0, 0)]
    assert feebook.writes_nothing_after(Status.APPROVED, {"bank_fee": 0, "merchant_fee": 0})
    assert not feebook.writes_nothing_after(Status.APPROVED, {"amount_captured": 2000})
