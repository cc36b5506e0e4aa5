"""How a journalled transaction looks to the web tier: its status and answer fields."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from switch.domain.status import Status
from switch.journal.models import Transaction

API_STATUS = {
    Status.PENDING: "pending",
    Status.APPROVED: "approved",
    Status.DECLINED: "declined",
    Status.FAILED: "failed",
    Status.TIMEOUT: "timeout",
    Status.REVERSAL_PENDING: "pending",
    Status.REVERSED: "reversed",
    Status.VOIDED: "reversed",
    Status.CAPTURED: "captured",
    Status.REFUNDED: "refunded",
    Status.PARTIALLY_REFUNDED: "partially_refunded",
    Status.AWAITING_CUSTOMER: "pending_customer_action",
}


def answer(txn: Transaction) -> dict[str, Any]:
    """The socket API's view of a journalled transaction."""
    return {
        "txn_id": txn.txn_id,
        "status": API_STATUS[txn.status],
        "reason": txn.reason or txn.status.value,
        "response_code": txn.response_code,
        "auth_code": txn.auth_code,
        "rrn": txn.rrn,
        "stan": txn.stan,
        "connector": txn.connector,
        "masked_pan": txn.masked_pan,
        "merchant_id": txn.merchant_id,
        "store_id": txn.store_id,
        "order_id": txn.order_id,
        "amount": txn.amount,
        "currency": txn.currency,
        "kind": txn.kind.value,
        "amount_authorized": txn.amount_authorized,
        "amount_captured": txn.amount_captured,
        "amount_refunded": txn.amount_refunded,
        "bank_fee": txn.bank_fee,
        "merchant_fee": txn.merchant_fee,
    }


def net_fees(payment: Transaction, operations: Iterable[Transaction]) -> dict[str, int]:
    """A payment's fees so far: its own row's plus its operations' (refunds and voids are negative)."""
    rows = [payment, *operations]
    return {"bank_fee": sum(t.bank_fee for t in rows), "merchant_fee": sum(t.merchant_fee for t in rows)}
