"""Reconciliation by file on made-up journal rows: every kind of exception, pairs that cancel within the
day on either side, and properties (a file that says what the journal says is clean; one line taken
out or added is exactly one exception naming its payment)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from switch.domain.settlement import movements
from switch.domain.settlementfile import SettlementLine
from switch.domain.status import Kind, Status
from switch.ops.reconcile import reconcile, render_text
from tests.settlementrows import D1, D2, R


def sale(n: int, status: Status = Status.APPROVED, amount: int = 1000, **kw) -> R:
    return R(f"s{n}", Kind.SALE, status, amount, amount, amount, rrn=f"RRN{n:09d}", stan=f"{n:06d}", **kw)


def moved(rows: list[R], date: str = D1) -> list:
    by_id = {r.txn_id: r for r in rows}
    out = []
    for r in rows:
        parent = by_id.get(r.parent_txn_id or "")
        out += [(m, r, parent) for m in movements(r, parent) if m.business_date == date]
    return out


def line(r: R, type_: str = "debit", amount: int | None = None, date: str = D1) -> SettlementLine:
    return SettlementLine(date, r.rrn or "", r.stan or "", "WEB00001", "411111******1111",
                          r.amount if amount is None else amount, "USD", type_, "123456")


def finder(rows: list[R]):
    async def find(stan: str, rrn: str) -> list[R]:
        return [r for r in rows if r.stan == stan and r.rrn == rrn]
    return find


def run(rows: list[R], lines: list[SettlementLine], date: str = D1):
    """Reconcile on made-up rows; the look-up never waits, so the coroutine finishes at its first step."""
    coroutine = reconcile("bank_a", date, lines, moved(rows, date), finder(rows))
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("reconcile waited on something")


def test_each_kind_of_exception_names_the_payment():
    ok, short, declined, dup = sale(1), sale(2), sale(3, Status.DECLINED), sale(4)
    usd_eur = sale(5)
    voided = sale(6, Status.VOIDED)
    void = R("v6", Kind.VOID, Status.APPROVED, 1000, parent_txn_id="s6")
    lost = sale(7)
    later = sale(8, business_date=D2)
    rows = [ok, short, declined, dup, usd_eur, voided, void, lost, later]
    lines = [line(ok), line(short, amount=999), line(declined), line(dup), line(dup),
             replace(line(usd_eur), currency="EUR"), line(voided), line(later),
             replace(line(ok), rrn="NOTOURS00001", stan="999999")]
    result = run(rows, lines)
    found = {(e.kind, e.payment) for e in result.exceptions}
    assert found == {
        ("amount_mismatch", "s2"), ("status_mismatch", "s3"), ("duplicate_at_bank", "s4"),
        ("currency_mismatch", "s5"), ("missing_at_bank", "s6"), ("missing_at_bank", "s7"),
        ("date_mismatch", "s8"), ("missing_at_switch", None),
    }
    void_missing = next(e for e in result.exceptions if e.payment == "s6")
    assert (void_missing.type, void_missing.operation, void_missing.rrn) == ("debit_reversal", "v6", voided.rrn), \
        "the void is the bank's reversal of the sale: the sale's references, the void's id"
    assert not result.clean and len(render_text(result)) == len(result.exceptions) + 1
    assert result.as_dict()["result"] == "exceptions"


def test_a_reversal_within_the_day_cancels_on_either_side_alone():
    never_reached = sale(1, Status.REVERSED, reversal_business_date=D1)  # switch: sale and reversal, bank: nothing
    reached = sale(2, Status.REVERSED, reversal_business_date=D1)        # both sides: sale and reversal
    result = run([never_reached, reached], [line(reached), line(reached, "debit_reversal")])
    assert result.clean and (result.matched, result.cancelled) == (2, 2)
    bank_only = sale(3, Status.DECLINED)  # a bank that posted and reversed what the switch saw declined
    result = run([bank_only], [line(bank_only), line(bank_only, "debit_reversal")])
    assert result.clean and result.cancelled == 2


def test_a_reversal_on_a_later_date_is_matched_on_that_date_only():
    r = sale(1, Status.REVERSED, reversal_business_date=D2)
    assert (run([r], [line(r)], D1)).clean
    assert (run([r], [line(r, "debit_reversal", date=D2)], D2)).clean
    result = run([r], [], D2)
    assert [(e.kind, e.type) for e in result.exceptions] == [("missing_at_bank", "debit_reversal")]
    reversed_at_bank = run([sale(2)], [line(sale(2)), line(sale(2), "debit_reversal")])
    assert [(e.kind, e.detail) for e in reversed_at_bank.exceptions] == [
        ("status_mismatch", "posted at the bank as debit_reversal; approved at the switch")]


days = st.lists(st.tuples(st.integers(1, 5_000), st.sampled_from(["sale", "refunded", "reversed", "declined"])),
                min_size=1, max_size=8)


def day_of(spec: list[tuple[int, str]]) -> tuple[list[R], list[SettlementLine]]:
    """Rows and the file a bank that agrees would send."""
    rows: list[R] = []
    lines: list[SettlementLine] = []
    for n, (amount, what) in enumerate(spec, start=1):
        status = {"sale": Status.APPROVED, "refunded": Status.REFUNDED, "reversed": Status.REVERSED,
                  "declined": Status.DECLINED}[what]
        s = sale(n, status, amount, reversal_business_date=D1 if what == "reversed" else None)
        rows.append(s)
        if what != "declined":
            lines.append(line(s))
        if what == "reversed":
            lines.append(line(s, "debit_reversal"))
        if what == "refunded":
            refund = R(f"r{n}", Kind.REFUND, Status.APPROVED, amount, rrn=f"RFD{n:09d}", stan=f"{n + 500:06d}",
                       parent_txn_id=s.txn_id)
            rows.append(refund)
            lines.append(line(refund, "credit"))
    return rows, lines


@settings(max_examples=40, deadline=None)
@given(days, st.data())
def test_an_agreeing_file_is_clean_and_any_line_out_or_in_twice_is_one_exception(spec, data):
    rows, lines = day_of(spec)
    assert (run(rows, lines)).clean
    if not lines:
        return
    i = data.draw(st.integers(0, len(lines) - 1))
    payment = next(r.parent_txn_id or r.txn_id for r in rows if r.rrn == lines[i].rrn and r.stan == lines[i].stan)
    dropped = run(rows, lines[:i] + lines[i + 1:])
    doubled = run(rows, lines + [lines[i]])
    for result, kind in ((dropped, "missing_at_bank"), (doubled, "duplicate_at_bank")):
        assert [(e.kind, e.payment) for e in result.exceptions] == [(kind, payment)], (kind, spec, i)
