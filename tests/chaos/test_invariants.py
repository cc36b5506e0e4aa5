"""The chaos checks themselves: each catches the money error it is named after, and a clean order passes.

Built from hand-made web-tier records, journal rows and bank postings, so they run in
milliseconds and prove the chaos test can fail for each reason it reports.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from switch.journal.models import Kind, Status, Transaction
from tests.chaos.invariants import BankPosting, _bank, _status_and_journal, _web_tier, expected_money
from tests.chaos.webtier import Attempt, Order
from tests.crash.invariants import Report

NOW = datetime(2030, 1, 2, tzinfo=timezone.utc)
PAN = "4111111111111111"


def txn(txn_id: str, kind: Kind, status: Status, amount: int, parent: str | None = None, **amounts: int) -> Transaction:
    return Transaction(
        txn_id=txn_id, kind=kind, parent_txn_id=parent, merchant_id="M100", store_id="web", order_id="o-1",
        connector="bank_a", status=status, version=1, amount=amount, currency="USD",
        amount_authorized=amounts.get("authorized", 0), amount_captured=amounts.get("captured", 0),
        amount_refunded=amounts.get("refunded", 0), stan="000001", rrn="000000000001", auth_code="000001",
        response_code="00", reason="approved", masked_pan="411111******1111", pan_hash=None, card=None,
        transmission_datetime=None, sent_at=None, idempotency_key=None, request_hash=None, created_at=NOW,
        updated_at=NOW,
    )


def attempt(op: str, told: str, amount: int | None = None, op_id: str | None = None, **extra: Any) -> Attempt:
    answer: dict[str, Any] = {"txn_id": "P1", "status": told if op in ("authorize", "void") else "captured"}
    if op in ("capture", "refund"):
        answer["operation"] = {"txn_id": op_id, "kind": op, "status": told, "amount": amount}
    return Attempt(op, f"key-{op}-{op_id}", {"txn_id": "P1"}, outcomes=[told], answer=answer, **extra)


def captured_preauth(final: dict[str, Any], *attempts: Attempt) -> Order:
    order = Order(n=1, worker=0, order_id="o-1", pan=PAN, bank="bank_a", capture=False, amount=5000,
                  plan=["capture"], txn_id="P1")
    order.attempts = [attempt("authorize", "approved"), *attempts]
    order.final = {"status": "captured", "amount_authorized": 5000, "amount_captured": 4000, "amount_refunded": 0,
                   "operations": [{"txn_id": "C1", "kind": "capture", "amount": 4000, "status": "approved"}], **final}
    return order


PARENT = txn("P1", Kind.AUTHORIZATION, Status.CAPTURED, 5000, authorized=5000, captured=4000)
CAPTURE = txn("C1", Kind.CAPTURE, Status.APPROVED, 4000, parent="P1")
HOLD = BankPosting("bank_a", 1, PAN, "hold", 5000, "0100", "000000000001", reversed=False, open_hold=False)
DEBIT = BankPosting("bank_a", 2, PAN, "debit", 4000, "0220", "000000000001", reversed=False, open_hold=False)


def checked(order: Order, parents: list[Transaction], children: list[Transaction],
            postings: list[BankPosting]) -> Report:
    report = Report()
    _web_tier(report, order)
    _status_and_journal(report, order, parents, children)
    _bank(report, order, expected_money(order), postings, children)
    return report


def test_a_clean_captured_order_passes():
    order = captured_preauth({}, attempt("capture", "approved", 4000, "C1"))
    assert dict(checked(order, [PARENT], [CAPTURE], [HOLD, DEBIT]).violations) == {}


def test_a_second_completion_at_the_bank_is_a_double_debit():
    order = captured_preauth({}, attempt("capture", "timeout", 4000, "C0"), attempt("capture", "approved", 4000, "C1"))
    second = replace(DEBIT, id=3)
    report = checked(order, [PARENT], [CAPTURE], [HOLD, DEBIT, second])
    assert set(report.violations) == {"B1 bank vs status", "B2 no double debit or credit"}
    assert "debited 2 times" in report.violations["B2 no double debit or credit"][0]
    assert "{'debit': 8000, 'credit': 0, 'hold': 0}" in report.violations["B1 bank vs status"][0]


def test_a_parent_that_missed_its_refund_disagrees_with_its_operations_and_the_web_tier():
    refund = txn("R1", Kind.REFUND, Status.APPROVED, 4000, parent="P1")
    order = captured_preauth(
        {"operations": [{"txn_id": "C1", "kind": "capture", "amount": 4000, "status": "approved"},
                        {"txn_id": "R1", "kind": "refund", "amount": 4000, "status": "approved"}]},
        attempt("capture", "approved", 4000, "C1"), attempt("refund", "approved", 4000, "R1"),
    )
    credit = BankPosting("bank_a", 3, PAN, "credit", 4000, "0200", "000000000002", reversed=False, open_hold=False)
    report = checked(order, [PARENT], [CAPTURE, refund], [HOLD, DEBIT, credit])
    assert "refunded 0, its approved operations add up to 4000" in report.violations["J parent totals == operations"][0]
    assert "refunds answered approved add up to 4000" in report.violations["W1 web tier vs status"][0]
    assert "status says {'debit': 4000, 'credit': 0" in report.violations["B1 bank vs status"][0]


def test_a_double_submission_must_name_one_operation():
    twin = attempt("capture", "approved", 4000, "C2", twin=True)
    twin.key = "key-capture-C1"
    order = captured_preauth({}, attempt("capture", "approved", 4000, "C1"), twin)
    report = checked(order, [PARENT], [CAPTURE], [HOLD, DEBIT])
    assert "answered ('C1', 'approved') and ('C2', 'approved')" in report.violations["W2 one key, one operation"][0]
    assert "2 captures were answered approved" in report.violations["W1 web tier vs status"][0]


def test_an_unlisted_or_pending_operation_is_reported():
    order = captured_preauth({"operations": [{"txn_id": "C1", "kind": "capture", "amount": 4000, "status": "pending"}]},
                             attempt("capture", "approved", 4000, "C1"))
    report = checked(order, [PARENT], [CAPTURE], [HOLD, DEBIT])
    assert "listed as ('capture', 4000, 'pending')" in report.violations["S status lists operations"][0]
    assert "operation C1 still pending" in report.violations["P nothing pending"][0]
    del order.final["operations"]
    assert "no 'operations' in the status answer" in \
        checked(order, [PARENT], [CAPTURE], [HOLD, DEBIT]).violations["S status lists operations"][0]
