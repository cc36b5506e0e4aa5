"""The settlement report of a business date, built from the journal's rows of that date.

Every number comes from `switch.domain.settlement.movements` (what each row moved on the
date, the same classification the reconciliation uses), summed per bank and currency, per
merchant and currency, and per currency for the gateway. Amounts are integer minor units;
fees are signed as journalled (a refund's or void's reversed fee is negative).

Counts are of what happened on the date: a sale voided the same day is a sale and a void here
(the day's 0500 totals net such a pair out; the net is the same either way).

Per bank: ``sales`` are debits (sales and captures); ``refunds`` credits; ``voids`` the
debits a void undid; ``reversals`` every other reversal of money (a sale the switch reversed
on a later date than its approval, a refund reversed), whichever way the money went back;
``authorizations`` pre-authorizations (no money) and ``authorization_reversals`` those voided
or reversed. ``net_before_fees`` = sales − voids − sale reversals − refunds + refund reversals
(what the bank owes the acquirer side for the day, the 0500's net); ``net`` = that − bank fees.

Per merchant: ``gross`` = sales − voids − sale reversals; ``refunds`` = refunds − refund
reversals; ``mdr`` the merchant discount; ``net`` = gross − refunds − mdr, the payout.
Gateway: ``revenue`` = merchant discounts − bank fees.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Collection, Iterable, Sequence

from switch.domain.settlement import Movement
from switch.domain.status import Kind
from switch.ops import daybook


@dataclass
class BankTotals:
    bank: str
    currency: str
    sales_count: int = 0
    sales_amount: int = 0
    refunds_count: int = 0
    refunds_amount: int = 0
    reversals_count: int = 0
    reversals_amount: int = 0
    voids_count: int = 0
    voids_amount: int = 0
    authorizations_count: int = 0
    authorization_reversals_count: int = 0
    bank_fees: int = 0
    net_before_fees: int = 0
    net: int = 0


@dataclass
class MerchantTotals:
    merchant: str
    currency: str
    sales_count: int = 0
    refunds_count: int = 0
    gross: int = 0
    refunds: int = 0
    mdr: int = 0
    net: int = 0


@dataclass
class GatewayTotals:
    currency: str
    merchant_fees: int = 0
    bank_fees: int = 0
    revenue: int = 0


@dataclass(frozen=True)
class SettlementReport:
    business_date: str
    banks: list[BankTotals] = field(default_factory=list)
    merchants: list[MerchantTotals] = field(default_factory=list)
    gateway: list[GatewayTotals] = field(default_factory=list)
    bank: str | None = None
    merchant: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON carries it (``bank``/``merchant``: the filter, when one was asked)."""
        return asdict(self)


MONEY_COLUMNS = {
    "banks": ("sales_amount", "refunds_amount", "reversals_amount", "voids_amount", "bank_fees", "net_before_fees",
              "net"),
    "merchants": ("gross", "refunds", "mdr", "net"),
    "gateway": ("merchant_fees", "bank_fees", "revenue"),
}
"""Columns in minor units of the row's currency (the others are counts or names)."""


def columns(section: str) -> tuple[str, ...]:
    kind = {"banks": BankTotals, "merchants": MerchantTotals, "gateway": GatewayTotals}[section]
    return tuple(f.name for f in fields(kind))


def _category(movement: Movement) -> str:
    if movement.kind == "authorization":
        return "authorization_reversals" if movement.reversal else "authorizations"
    if not movement.reversal:
        return "sales" if movement.kind == "debit" else "refunds"
    return "voids" if movement.operation is Kind.VOID else "reversals"


def _signed(movement: Movement) -> int:
    """What the movement adds to the day's net: debits in, credits out, a reversal the other way."""
    if movement.kind == "authorization":
        return 0
    sign = 1 if movement.kind == "debit" else -1
    return -sign * movement.amount if movement.reversal else sign * movement.amount


def build(
    business_date: str, moved: Iterable[Movement], *, bank: str | None = None, merchant: str | None = None
) -> SettlementReport:
    """The report of ``moved`` (`Journal.day_movements`), only those through ``bank`` or for ``merchant``
    when given."""
    banks: dict[tuple[str, str], BankTotals] = {}
    merchants: dict[tuple[str, str], MerchantTotals] = {}
    gateway: dict[str, GatewayTotals] = {}
    for movement in moved:
        if bank is not None and movement.connector != bank or merchant is not None and movement.merchant_id != merchant:
            continue
        currency, category, signed = movement.currency, _category(movement), _signed(movement)
        b = banks.setdefault((movement.connector, currency), BankTotals(movement.connector, currency))
        setattr(b, f"{category}_count", getattr(b, f"{category}_count") + 1)
        if category not in ("authorizations", "authorization_reversals"):
            setattr(b, f"{category}_amount", getattr(b, f"{category}_amount") + movement.amount)
        b.bank_fees += movement.bank_fee
        b.net_before_fees += signed
        b.net = b.net_before_fees - b.bank_fees
        m = merchants.setdefault((movement.merchant_id, currency), MerchantTotals(movement.merchant_id, currency))
        if category == "sales":
            m.sales_count += 1
        elif category == "refunds":
            m.refunds_count += 1
        if movement.kind == "debit":
            m.gross += signed
        elif movement.kind == "credit":
            m.refunds -= signed
        m.mdr += movement.merchant_fee
        m.net = m.gross - m.refunds - m.mdr
        g = gateway.setdefault(currency, GatewayTotals(currency))
        g.merchant_fees += movement.merchant_fee
        g.bank_fees += movement.bank_fee
        g.revenue = g.merchant_fees - g.bank_fees
    return SettlementReport(
        business_date=business_date, banks=[banks[k] for k in sorted(banks)],
        merchants=[merchants[k] for k in sorted(merchants)], gateway=[gateway[k] for k in sorted(gateway)],
        bank=bank, merchant=merchant,
    )


def totals(rows: Sequence[Any]) -> dict[str, dict[str, int]]:
    """{currency: the sum of each money and count column} of a section's rows: the totals row."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        for name, value in vars(row).items():
            if isinstance(value, int) and name != "currency":
                out[row.currency][name] += value
    return {currency: dict(sums) for currency, sums in sorted(out.items())}


class UnknownBank(ValueError):
    """A report asked for a bank (connector) the configuration does not have."""


async def settlement_report(journal: Any, business_date: str | None, banks: Collection[str], *,
                            bank: str | None = None, merchant: str | None = None) -> SettlementReport | None:
    """The report of ``business_date`` (default `daybook.report_date`) from the journal; None when there
    is no business day at all; UnknownBank when ``bank`` is not one of ``banks``."""
    if bank is not None and bank not in banks:
        raise UnknownBank(f"unknown bank {bank!r}; configured: {', '.join(sorted(banks))}")
    if business_date is None:
        business_date = await daybook.report_date(journal, bank)
        if business_date is None:
            return None
    return build(business_date, await journal.day_movements(business_date, bank), bank=bank, merchant=merchant)
