"""Reconciliation by file: a bank's settlement file matched line by line with the journal's movements.

Why per transaction: totals that disagree (the 0500/0510 exchange) say *that* money is out,
not *which* payment; a settlement file names every posting, so each difference becomes an
exception naming the transaction, for an operator to chase.

Matching (README, "Reconciliation by file"). Each movement of money the journal holds for
the bank and business date (`switch.domain.settlement.movements`: pre-authorizations move
no money and are not in a bank's file) becomes an item keyed by type (``debit``,
``credit``, ``debit_reversal``, ``credit_reversal``) and the RRN and STAN of the transaction
it belongs to (a void or reversal: the payment it undoes; a capture or refund: its own
message); the file's lines carry the same keys. Lines and items with the same key pair up,
equal amount and currency first; a pair that differs is an ``amount_mismatch`` or
``currency_mismatch``. What is left over on either side and is a debit and its reversal
(or a credit and its reversal) of the same transaction and amount cancels: the money went
and came back within the day. Then:

* an item left: ``missing_at_bank``;
* a line left: the journal is asked for a transaction sent to this bank with that STAN and
  RRN: none is ``missing_at_switch``; one that moved nothing on the date (declined, failed,
  reversed, voided, still pending) is a ``status_mismatch``; one journalled on another
  business date is a ``date_mismatch``; one that moved this already (a line matched it) is
  ``duplicate_at_bank``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Iterable, Sequence

from switch.domain.settlement import Movement
from switch.domain.settlementfile import SettlementLine
from switch.domain.status import Kind
from switch.journal.models import Transaction

EXCEPTION_KINDS = ("missing_at_bank", "missing_at_switch", "amount_mismatch", "currency_mismatch",
                   "status_mismatch", "date_mismatch", "duplicate_at_bank")

Key = tuple[str, str, str]


def _stan(value: str | None) -> str:
    return (value or "").lstrip("0") or "0"


def _rrn(value: str | None) -> str:
    return (value or "").strip()


@dataclass(frozen=True)
class Item:
    """One movement of money at the switch, as it should appear in the bank's file."""

    type: str
    rrn: str
    stan: str
    amount: int
    currency: str
    payment: str
    operation: str | None
    ref: str
    """The transaction whose references the line carries: the row, or the payment a void undoes."""

    @property
    def key(self) -> Key:
        return self.type, _rrn(self.rrn), _stan(self.stan)


def item(movement: Movement, row: Transaction, parent: Transaction | None) -> Item | None:
    """The file line ``movement`` should match; None for a pre-authorization (no money)."""
    if movement.kind == "authorization":
        return None
    ref = parent if row.kind is Kind.VOID and parent is not None else row
    return Item(
        type=f"{movement.kind}_reversal" if movement.reversal else movement.kind, rrn=ref.rrn or "",
        stan=ref.stan or "", amount=movement.amount, currency=movement.currency,
        payment=row.parent_txn_id or row.txn_id, operation=row.txn_id if row.parent_txn_id else None, ref=ref.txn_id,
    )


def line_key(line: SettlementLine) -> Key:
    return line.type, _rrn(line.rrn), _stan(line.stan)


@dataclass(frozen=True)
class ReconException:
    """One difference; ``payment``/``operation`` name the switch's transaction when it has one."""

    kind: str
    type: str
    rrn: str
    stan: str
    currency: str
    switch_amount: int | None
    bank_amount: int | None
    payment: str | None
    operation: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Result:
    bank: str
    business_date: str
    lines: int
    movements: int
    matched: int
    cancelled: int
    exceptions: list[ReconException]

    @property
    def clean(self) -> bool:
        return not self.exceptions

    def as_dict(self) -> dict[str, Any]:
        return {"bank": self.bank, "business_date": self.business_date,
                "result": "clean" if self.clean else "exceptions", "lines": self.lines,
                "movements": self.movements, "matched": self.matched, "cancelled_within_day": self.cancelled,
                "exceptions": [e.as_dict() for e in self.exceptions]}


def _pair(lines: list[SettlementLine], items: list[Item]) -> tuple[list[tuple[SettlementLine, Item]], list, list]:
    """Same-key lines and items paired, equal amount and currency first; returns (pairs, lines left, items left)."""
    lines, items, pairs = list(lines), list(items), []
    for it in list(items):
        same = next((ln for ln in lines if (ln.amount, ln.currency) == (it.amount, it.currency)), None)
        if same is not None:
            pairs.append((same, it))
            lines.remove(same)
            items.remove(it)
    while lines and items:
        pairs.append((lines.pop(0), items.pop(0)))
    return pairs, lines, items


def _cancel(left: list[Any], key: Callable[[Any], Key]) -> tuple[list[Any], int]:
    """Drop each original and reversal of the same transaction and amount among ``left``."""
    reversals: dict[tuple[Key, int, str], list[int]] = defaultdict(list)
    for i, x in enumerate(left):
        if key(x)[0].endswith("_reversal"):
            reversals[(key(x), x.amount, x.currency)].append(i)
    dropped: set[int] = set()
    for i, original in enumerate(left):
        type_, rrn, stan = key(original)
        undo = reversals.get(((f"{type_}_reversal", rrn, stan), original.amount, original.currency))
        if not type_.endswith("_reversal") and undo:
            dropped.update((i, undo.pop()))
    return [x for i, x in enumerate(left) if i not in dropped], len(dropped)


def _mismatch(line: SettlementLine, it: Item) -> ReconException | None:
    kind = "currency_mismatch" if line.currency != it.currency else "amount_mismatch" if line.amount != it.amount \
        else None
    if kind is None:
        return None
    return ReconException(kind, it.type, line.rrn, line.stan, it.currency, it.amount, line.amount, it.payment,
                          it.operation, f"the switch has {it.amount} {it.currency}, the bank {line.amount} "
                                        f"{line.currency}")


FindSent = Callable[[str, str], Awaitable[Sequence[Transaction]]]
"""(stan, rrn) -> the transactions sent to the bank with them (`Journal.find_sent`)."""


async def _unmatched_line(line: SettlementLine, business_date: str, matched: set[tuple[str, str]], find: FindSent,
                          day_rows: dict[str, Transaction]) -> ReconException:
    found = [t for t in await find(line.stan, line.rrn) if t.kind is not Kind.VOID]
    row = next((day_rows.get(t.txn_id, t) for t in found), None)

    def exception(kind: str, detail: str) -> ReconException:
        payment = (row.parent_txn_id or row.txn_id) if row is not None else None
        operation = row.txn_id if row is not None and row.parent_txn_id else None
        return ReconException(kind, line.type, line.rrn, line.stan, line.currency, None, line.amount, payment,
                              operation, detail)

    if row is None:
        return exception("missing_at_switch", "the bank posted it; the journal has no transaction sent to this "
                                              "bank with this STAN and RRN")
    if (row.txn_id, line.type) in matched:
        return exception("duplicate_at_bank", f"the bank posted it again; the switch's {row.kind.value} moved it once")
    dates = {row.business_date, row.reversal_business_date}
    if business_date not in dates:
        shown = ", ".join(sorted(d for d in dates if d)) or "no business date"
        return exception("date_mismatch", f"the switch's {row.kind.value} is on {shown}")
    return exception("status_mismatch", f"posted at the bank as {line.type}; {row.status.value} at the switch")


async def reconcile(
    bank: str, business_date: str, lines: Sequence[SettlementLine],
    moved: Iterable[tuple[Movement, Transaction, Transaction | None]], find: FindSent,
) -> Result:
    """Match the file's ``lines`` with the journal's movements ``moved`` (movement, its row, the row's
    parent) of ``bank`` on ``business_date``; ``find`` looks up the journal for lines left over."""
    moved = list(moved)
    items = [it for it in (item(m, row, parent) for m, row, parent in moved) if it is not None]
    by_key: dict[Key, tuple[list[SettlementLine], list[Item]]] = defaultdict(lambda: ([], []))
    for line in lines:
        by_key[line_key(line)][0].append(line)
    for it in items:
        by_key[it.key][1].append(it)
    exceptions: list[ReconException] = []
    lines_left: list[SettlementLine] = []
    items_left: list[Item] = []
    matched_rows: set[tuple[str, str]] = set()
    matched = 0
    for key_lines, key_items in by_key.values():
        pairs, more_lines, more_items = _pair(key_lines, key_items)
        for line, it in pairs:
            matched += 1
            matched_rows.add((it.ref, it.type))
            found = _mismatch(line, it)
            if found is not None:
                exceptions.append(found)
        lines_left += more_lines
        items_left += more_items
    lines_left, cancelled_lines = _cancel(lines_left, line_key)
    items_left, cancelled_items = _cancel(items_left, lambda it: it.key)
    for it in items_left:
        exceptions.append(ReconException(
            "missing_at_bank", it.type, it.rrn, it.stan, it.currency, it.amount, None, it.payment, it.operation,
            "the switch journalled it; the bank's file has no such line"))
    day_rows = {row.txn_id: row for _, row, _ in moved}
    for line in lines_left:
        exceptions.append(await _unmatched_line(line, business_date, matched_rows, find, day_rows))
    return Result(bank, business_date, len(lines), len(items), matched, cancelled_lines + cancelled_items,
                  exceptions)


def render_text(result: Result) -> list[str]:
    """One line per exception, then the summary."""
    out = [f"{e.kind:<18} {e.type:<16} rrn {e.rrn or '-':<12} stan {e.stan:<6} "
           f"switch {'-' if e.switch_amount is None else e.switch_amount} bank "
           f"{'-' if e.bank_amount is None else e.bank_amount} {e.currency} "
           f"payment {e.payment or '-'}{f' operation {e.operation}' if e.operation else ''}: {e.detail}"
           for e in result.exceptions]
    verdict = "clean: every line matches the journal" if result.clean else f"{len(result.exceptions)} exception(s)"
    out.append(f"{result.bank} {result.business_date}: {result.lines} line(s) in the file, {result.movements} "
               f"movement(s) in the journal, {result.matched} matched, {result.cancelled} cancelled within the "
               f"day; {verdict}")
    return out
