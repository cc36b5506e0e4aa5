"""A journal row as the settlement classification reads it, for tests that make up a day's rows."""

from __future__ import annotations

from dataclasses import dataclass

from switch.domain.status import Kind, Status

D1, D2 = "2026-11-28", "2026-11-29"


@dataclass
class R:
    txn_id: str
    kind: Kind
    status: Status
    amount: int = 1000
    amount_authorized: int = 0
    amount_captured: int = 0
    bank_fee: int = 0
    merchant_fee: int = 0
    business_date: str | None = D1
    reversal_business_date: str | None = None
    parent_txn_id: str | None = None
    rrn: str | None = None
    stan: str | None = None
    connector: str = "bank_a"
    merchant_id: str = "M100"
    currency: str = "USD"
