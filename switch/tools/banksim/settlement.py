"""banksim's settlement file: the postings of one business date that moved money, one line each.

Why: a bank tells its acquirers what it settled in a file, and `kswitch reconcile --file`
matches such a file transaction by transaction with the journal; banksim writes one from its
ledger so that path is tested end to end (format: `switch.domain.settlementfile`).

What is in it: sales, completions and refunds (``debit``/``credit``), and the reversals of
those (``debit_reversal``/``credit_reversal``) on the date of the reversal, carrying the
references (RRN, STAN, terminal, card, authorization code) of the transaction they reverse,
as a bank's file names a reversed transaction. Holds and their releases move no money and
are left out. A reversal on the same date as its original is listed too (both lines): the
reader nets them.

A posting's business date is the one banksim stamped on it (`Posting.business_date`), else the
UTC day it was made (`posting_date`). A posting is listed as many times as it is ``settled``:
once, or not at all / twice under the ``drop_posting`` / ``double_posting`` faults (the bank's
file then disagrees with the switch about that payment, as its totals do).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from switch.domain.settlementfile import SettlementLine
from switch.tools.banksim.ledger import Posting, read_snapshot

SETTLED = {
    "sale_debit": "debit",
    "completion_debit": "debit",
    "refund_credit": "credit",
    "reversal_credit": "debit_reversal",
    "reversal_debit": "credit_reversal",
}
"""Posting kinds in the file, and the line type each becomes."""


def posting_date(posting: Posting) -> str:
    return posting.business_date or time.strftime("%Y-%m-%d", time.gmtime(posting.at))


def settlement_lines(
    postings: Sequence[Posting], business_date: str, date_of: Callable[[Posting], str] = posting_date
) -> list[SettlementLine]:
    """The file's lines for ``business_date``, in posting order (``postings``: the whole ledger,
    so that a reversal finds its original even from an earlier date)."""
    by_id = {p.id: p for p in postings}
    lines = []
    for posting in postings:
        kind = SETTLED.get(posting.kind)
        if kind is None or date_of(posting) != business_date:
            continue
        ref = by_id.get(posting.original or 0, posting) if kind.endswith("_reversal") else posting
        lines += [SettlementLine(
            business_date=business_date, rrn=ref.rrn or "", stan=ref.stan or "", terminal=ref.terminal or "",
            card=ref.masked_pan or "", amount=posting.amount, currency=posting.currency or "", type=kind,
            auth_code=ref.auth_code or "",
        )] * posting.settled
    return lines


def read_postings(path: Path | str) -> list[Posting]:
    """Every posting of a ledger file, read-only (banksim may be writing it); LedgerError if unusable."""
    return [Posting(**{k: v for k, v in p.items() if k != "time"}, times=(), acquirer="")
            for p in read_snapshot(path)["postings"]]
