"""What the journal says moved on a business date: the common start of reports and reconciliation by file.

Why here once: a report and a reconciliation that classified the same rows differently
would disagree about the same day; both take their movements from `day_movements`
(`Journal.day_rows` classified by `switch.domain.settlement.movements`).

Movements are not netted here: a sale voided on its own date is a sale and a void in a report
and two lines in a bank's file; `switch.domain.settlement.netted` is for the day's totals.
"""

from __future__ import annotations

from typing import Any

from switch.domain.settlement import Movement, movements
from switch.journal.models import Transaction

Moved = tuple[Movement, Transaction, "Transaction | None"]
"""A movement, the journal row it comes from, and that row's parent (None for a payment)."""


async def day_movements(journal: Any, business_date: str, connector: str | None = None) -> list[Moved]:
    """Every movement of ``business_date`` (through ``connector`` when given), in journal order."""
    rows = await journal.day_rows(business_date, connector)
    known = {row.txn_id: row for row in rows}
    out: list[Moved] = []
    for row in rows:
        parent = None
        if row.parent_txn_id is not None:
            parent = known.get(row.parent_txn_id) or await journal.get_transaction(row.parent_txn_id)
            known[parent.txn_id] = parent
        out.extend((m, row, parent) for m in movements(row, parent) if m.business_date == business_date)
    return out


async def report_date(journal: Any, connector: str | None = None) -> str | None:
    """The latest closed business date (of ``connector``, or of any), else the latest open one; None
    when the journal has no business day yet."""
    days = await journal.business_days(connector)
    closed = [d.business_date for d in days if d.state == "closed"]
    if closed:
        return max(closed)
    return max((d.business_date for d in days), default=None)
