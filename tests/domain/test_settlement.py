"""The classification shared by reconciliation and reports: what a row moved on which date,
and how same-day reversals net out of the day's totals."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from switch.domain.settlement import DayTotals, movements, netted, on_date
from switch.domain.status import Kind, Status
from tests.settlementrows import D1, D2, R


def totals(rows: list[R], date: str) -> DayTotals:
    parents = {r.txn_id: r for r in rows}
    found = DayTotals.from_movements(on_date(rows, parents, date))
    return found.get(("bank_a", "USD"), DayTotals("bank_a", "USD"))


def test_a_day_of_sales_captures_refunds_and_a_preauth() -> None:
    rows = [
        R("s1", Kind.SALE, Status.PARTIALLY_REFUNDED, 1000, 1000, 1000, bank_fee=5, merchant_fee=25),
        R("r1", Kind.REFUND, Status.APPROVED, 300, parent_txn_id="s1", bank_fee=-1, merchant_fee=-7),
        R("a1", Kind.AUTHORIZATION, Status.CAPTURED, 2000, 2000, 1500),
        R("c1", Kind.CAPTURE, Status.APPROVED, 1500, parent_txn_id="a1", bank_fee=7, merchant_fee=37),
        R("a2", Kind.AUTHORIZATION, Status.APPROVED, 700, 700),
        R("d1", Kind.SALE, Status.DECLINED, 900),
    ]
    t = totals(rows, D1)
    assert (t.debits_count, t.debits_amount, t.credits_count, t.credits_amount) == (2, 2500, 1, 300)
    assert (t.authorizations_count, t.bank_fees, t.merchant_fees, t.net) == (2, 11, 55, 2200)


def test_a_same_day_reversal_nets_out_and_a_later_one_counts_on_its_own_day() -> None:
    same = R("s1", Kind.SALE, Status.REVERSED, 1000, business_date=D1, reversal_business_date=D1)
    later = R("s2", Kind.SALE, Status.REVERSED, 400, 400, 400, business_date=D1, reversal_business_date=D2)
    t1, t2 = totals([same, later], D1), totals([same, later], D2)
    assert (t1.debits_count, t1.debits_amount, t1.debit_reversals_count, t1.net) == (1, 400, 0, 400)
    assert (t2.debits_count, t2.debit_reversals_count, t2.debit_reversals_amount, t2.net) == (0, 1, 400, -400)


def test_a_void_reverses_what_its_parent_moved() -> None:
    sale = R("s1", Kind.SALE, Status.VOIDED, 1000, 1000, 1000)
    void = R("v1", Kind.VOID, Status.APPROVED, 1000, parent_txn_id="s1", business_date=D2)
    preauth = R("a1", Kind.AUTHORIZATION, Status.VOIDED, 500, 500)
    pvoid = R("v2", Kind.VOID, Status.APPROVED, 500, parent_txn_id="a1", business_date=D1)
    rows = [sale, void, preauth, pvoid]
    t1, t2 = totals(rows, D1), totals(rows, D2)
    assert (t1.debits_count, t1.authorizations_count, t1.authorization_reversals_count) == (1, 0, 0)
    assert (t2.debit_reversals_count, t2.debit_reversals_amount, t2.net) == (1, 1000, -1000)
    assert [m.operation for m in movements(void, sale)] == [Kind.VOID]


def test_unresolved_and_failed_rows_moved_nothing() -> None:
    for status in (Status.PENDING, Status.TIMEOUT, Status.FAILED, Status.DECLINED):
        assert movements(R("x", Kind.SALE, status)) == []
    assert movements(R("x", Kind.SALE, Status.APPROVED, business_date=None)) == []


row_strategy = st.builds(
    R,
    txn_id=st.uuids().map(str),
    kind=st.sampled_from([Kind.SALE, Kind.REFUND, Kind.CAPTURE, Kind.AUTHORIZATION]),
    status=st.sampled_from(list(Status)),
    amount=st.integers(1, 10**9),
    amount_captured=st.integers(0, 10**9),
    amount_authorized=st.integers(0, 10**9),
    business_date=st.sampled_from([D1, D2]),
    reversal_business_date=st.sampled_from([D1, D2, None]),
)


@given(st.lists(row_strategy, max_size=30))
def test_netting_never_changes_the_net_only_the_counts(rows: list[R]) -> None:
    for date in (D1, D2):
        day = on_date(rows, {}, date)
        signed = sum((-1 if m.reversal else 1) * (-1 if m.kind == "credit" else 1) * m.amount
                     for m in day if m.kind != "authorization")
        assert sum(t.net for t in DayTotals.from_movements(day).values()) == signed
        assert len(netted(day)) <= len(day)
