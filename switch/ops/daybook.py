"""What the journal says moved on a business date, with the rows behind it: the start of reconciliation by file.

Why: the journal classifies a day's movements on a reader thread (`Journal.day_movements`,
the rules of `switch.domain.settlement`), which reports use as they are; matching a bank's
file also needs each movement's message references (RRN, STAN), which live on the row, or
for a void on the payment it undoes. Movements are not netted: a sale voided on its own date
is two lines in a bank's file too (`switch.domain.settlement.netted` is for the day's totals).
"""

from __future__ import annotations

from typing import Any

from switch.domain.settlement import Movement
from switch.journal.models import Transaction

Moved = tuple[Movement, Transaction, "Transaction | None"]
"""A movement, the journal row it comes from, and that row's parent (None for a payment)."""


async def day_movements(journal: Any, business_date: str, connector: str | None = None) -> list[Moved]:
    """Every movement of ``business_date`` (through ``connector`` when given) with its row and parent."""
    moved = await journal.day_movements(business_date, connector)
    rows = {row.txn_id: row for row in await journal.day_rows(business_date, connector)}
    for txn_id in {row.parent_txn_id for row in rows.values() if row.parent_txn_id} - rows.keys():
        rows[txn_id] = await journal.get_transaction(txn_id)
    out: list[Moved] = []
    for m in moved:
        row = rows[m.txn_id]
        out.append((m, row, rows[row.parent_txn_id] if row.parent_txn_id else None))
    return out


async def report_date(journal: Any, connector: str | None = None) -> str | None:
    """The latest closed business date (of ``connector``, or of any), else the latest open one; None
    when the journal has no business day yet."""
    days = await journal.business_days(connector)
    closed = [d.business_date for d in days if d.state == "closed"]
    if closed:
        return max(closed)
    return max((d.business_date for d in days), default=None)
