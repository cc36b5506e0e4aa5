"""What each journalled payment or operation moved on a business date, and the day's totals.

Why this exists: the switch's totals for a closed date are compared with the bank's
(reconciliation by message), its rows with the bank's file, and the same figures go into
the settlement reports. All three must classify a row the same way, or the gateway argues
with itself; so the classification lives here, once, and both sides of a comparison (the
switch and banksim) follow the same rules:

* a sale moves a **debit** (the amount captured), a capture a debit, a refund a **credit**,
  a pre-authorization an **authorization** (counted, no money);
* a void is the **reversal** of what its parent moved (a debit, or a bare authorization);
  a row the switch reversed (status ``reversed``) has its reversal on the date that reversal
  was acknowledged;
* a reversal on the same business date as what it reverses nets out in the totals (both
  disappear from the counts, as the bank's host does); one on a later date is counted there;
* declined, failed and unresolved rows moved nothing (yet).

The net is what the acquiring side is owed for the day before fees: debits minus debit
reversals minus credits plus credit reversals. Amounts are integer minor units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Literal, Protocol

from switch.domain.status import Kind, Status

MovementKind = Literal["debit", "credit", "authorization"]

_MOVED = frozenset({Status.APPROVED, Status.CAPTURED, Status.VOIDED, Status.REFUNDED,
                    Status.PARTIALLY_REFUNDED, Status.REVERSED})
_OPERATION_MOVED = frozenset({Status.APPROVED, Status.REVERSED})
_BASE_KIND: dict[Kind, MovementKind] = {
    Kind.SALE: "debit", Kind.CAPTURE: "debit", Kind.REFUND: "credit", Kind.AUTHORIZATION: "authorization",
}


class Row(Protocol):
    """The journal row fields the classification reads (a journal `Transaction` has them)."""

    txn_id: str
    kind: Kind
    status: Status
    connector: str
    merchant_id: str
    currency: str
    amount: int
    amount_authorized: int
    amount_captured: int
    bank_fee: int
    merchant_fee: int
    business_date: str | None
    reversal_business_date: str | None


@dataclass(frozen=True)
class Movement:
    """One movement of one row on one business date; ``original`` names the row a reversal reverses."""

    txn_id: str
    operation: Kind
    kind: MovementKind
    reversal: bool
    amount: int
    currency: str
    connector: str
    merchant_id: str
    business_date: str
    bank_fee: int = 0
    merchant_fee: int = 0
    original: str | None = None
    original_date: str | None = None


def _moved_amount(row: Row) -> int:
    if row.kind is Kind.SALE:
        return row.amount_captured or row.amount
    if row.kind is Kind.AUTHORIZATION:
        return row.amount_authorized or row.amount
    return row.amount


def _base(row: Row) -> Movement | None:
    kind = _BASE_KIND.get(row.kind)
    moved = _OPERATION_MOVED if row.kind in (Kind.CAPTURE, Kind.REFUND) else _MOVED
    reversing = row.status is Status.REVERSAL_PENDING and row.amount_authorized > 0
    if kind is None or row.business_date is None or not (row.status in moved or reversing):
        return None
    return Movement(row.txn_id, row.kind, kind, False, _moved_amount(row), row.currency, row.connector,
                    row.merchant_id, row.business_date, row.bank_fee, row.merchant_fee)


def _void(row: Row, parent: Row) -> Movement | None:
    if row.status is not Status.APPROVED or row.business_date is None:
        return None
    kind: MovementKind = "debit" if parent.kind is Kind.SALE or parent.amount_captured else "authorization"
    amount = parent.amount_captured if kind == "debit" else parent.amount_authorized
    return Movement(row.txn_id, Kind.VOID, kind, True, amount, row.currency, row.connector, row.merchant_id,
                    row.business_date, row.bank_fee, row.merchant_fee, parent.txn_id, parent.business_date)


def movements(row: Row, parent: Row | None = None) -> list[Movement]:
    """Every movement of ``row`` (``parent`` is needed for a void), on whatever dates they fell."""
    if row.kind is Kind.VOID:
        void = _void(row, parent) if parent is not None else None
        return [void] if void else []
    base = _base(row)
    if base is None:
        return []
    out = [base]
    if row.status is Status.REVERSED and row.reversal_business_date is not None:
        out.append(Movement(row.txn_id, row.kind, base.kind, True, base.amount, row.currency, row.connector,
                            row.merchant_id, row.reversal_business_date, original=row.txn_id,
                            original_date=row.business_date))
    return out


def on_date(rows: Iterable[Row], parents: Mapping[str, Row], date: str) -> list[Movement]:
    """The movements of ``rows`` that fell on ``date``; ``parents`` maps a void's parent id to its row."""
    found: list[Movement] = []
    for row in rows:
        parent = parents.get(getattr(row, "parent_txn_id", None) or "")
        found.extend(m for m in movements(row, parent) if m.business_date == date)
    return found


def netted(day: Iterable[Movement]) -> list[Movement]:
    """Drop each reversal on the same date as what it reverses, together with that original."""
    items = list(day)
    originals = {(m.txn_id, m.kind) for m in items if not m.reversal}
    pairs = {(m.original, m.kind) for m in items
             if m.reversal and m.original_date == m.business_date and (m.original, m.kind) in originals}
    return [m for m in items if ((m.original if m.reversal else m.txn_id), m.kind) not in pairs]


@dataclass
class DayTotals:
    """One connector's totals in one currency for one business date (what 0500/0510 compare)."""

    connector: str
    currency: str
    debits_count: int = 0
    debits_amount: int = 0
    debit_reversals_count: int = 0
    debit_reversals_amount: int = 0
    credits_count: int = 0
    credits_amount: int = 0
    credit_reversals_count: int = 0
    credit_reversals_amount: int = 0
    authorizations_count: int = 0
    authorization_reversals_count: int = 0
    bank_fees: int = 0
    merchant_fees: int = 0

    @property
    def net(self) -> int:
        return (self.debits_amount - self.debit_reversals_amount
                - self.credits_amount + self.credit_reversals_amount)

    def add(self, m: Movement) -> None:
        name = f"{m.kind}_reversals" if m.reversal else f"{m.kind}s"
        setattr(self, f"{name}_count", getattr(self, f"{name}_count") + 1)
        if m.kind != "authorization":
            setattr(self, f"{name}_amount", getattr(self, f"{name}_amount") + m.amount)
        self.bank_fees += m.bank_fee
        self.merchant_fees += m.merchant_fee

    def as_dict(self) -> dict[str, int | str]:
        out: dict[str, int | str] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["net"] = self.net
        return out

    @staticmethod
    def from_movements(day: Iterable[Movement]) -> dict[tuple[str, str], DayTotals]:
        """Totals per (connector, currency), after netting same-day reversals."""
        totals: dict[tuple[str, str], DayTotals] = {}
        for m in netted(day):
            key = (m.connector, m.currency)
            totals.setdefault(key, DayTotals(m.connector, m.currency)).add(m)
        return totals
