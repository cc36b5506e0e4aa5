"""Reconciliation by message: send a closed day's totals to the bank, read its verdict and its totals.

Why apart from the cutover: what goes on the wire and how two sets of totals are compared
(and which transaction a difference points at) is testable without a clock or a journal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from switch.domain.currency import by_alpha
from switch.engine.bank import Bank
from switch.iso.dialect import Message
from switch.iso.mti import approved_code, mti_for, transmission_time
from switch.iso.totals import (
    IN_BALANCE,
    OUT_OF_BALANCE,
    SETTLEMENT_CODE,
    TotalsError,
    compared,
    read_totals,
    request_fields,
)
from switch.journal.dayend import ExceptionDraft

# (count total, amount total, movement kind, reversal) of the categories a difference can point into
_CATEGORIES = (
    ("debits_count", "debits_amount", "debit", False),
    ("debit_reversals_count", "debit_reversals_amount", "debit", True),
    ("credits_count", "credits_amount", "credit", False),
    ("credit_reversals_count", "credit_reversals_amount", "credit", True),
)


@dataclass(frozen=True)
class Verdict:
    """The bank's answer to one currency's totals: ``result`` in_balance / out_of_balance / failed."""

    result: str
    bank_totals: dict[str, int] | None
    detail: str = ""


def request_message(bank: Bank, totals: Mapping[str, int], currency: str, day: date, stan: str, now: float) -> Message:
    """The 0500/1500 for one currency of a closed day, before the plugin's ``reconciliation`` hook."""
    version = bank.profile.dialect.version
    found = by_alpha(currency)
    if found is None:
        raise ValueError(f"unknown currency {currency!r}")
    message = {"t": mti_for("reconciliation", version), "7": transmission_time(now), "11": stan,
               "32": bank.profile.acquirer_id}
    message.update(request_fields(totals, found.numeric, day, version))
    return message


def verdict(response: Message, version: int) -> Verdict:
    """What the bank's 0510/1510 says: field 39 must approve, field 66 says whether we balance."""
    code = response.get("39")
    if code != approved_code(version):
        return Verdict("failed", None, f"the bank answered response code {code!r}")
    try:
        theirs = read_totals(response, version)
    except TotalsError as e:
        return Verdict("failed", None, str(e))
    settlement = response.get(SETTLEMENT_CODE)
    if settlement == IN_BALANCE:
        return Verdict("in_balance", theirs)
    if settlement == OUT_OF_BALANCE:
        return Verdict("out_of_balance", theirs)
    return Verdict("failed", theirs, f"settlement code (field 66) {settlement!r}")


def differences(ours: Mapping[str, int], theirs: Mapping[str, int], version: int,
                movements: Iterable[object] = ()) -> list[ExceptionDraft]:
    """One exception per total that differs; a count that is off by one whose amount difference
    matches exactly one of our movements of that category names that transaction."""
    found = []
    moves = list(movements)
    names = compared(version)
    for name in names:
        if ours.get(name, 0) != theirs.get(name, 0):
            found.append(ExceptionDraft("totals_mismatch", f"{name}: switch {ours.get(name, 0)}, "
                                                           f"bank {theirs.get(name, 0)}"))
    for count, amount, kind, reversal in _CATEGORIES:
        if abs(ours.get(count, 0) - theirs.get(count, 0)) != 1:
            continue
        gap = abs(ours.get(amount, 0) - theirs.get(amount, 0))
        matching = [m for m in moves if getattr(m, "kind", None) == kind and getattr(m, "reversal", None) == reversal
                    and getattr(m, "amount", None) == gap]
        if len(matching) == 1:
            txn = getattr(matching[0], "txn_id")
            found.append(ExceptionDraft("missing_at_bank" if ours.get(count, 0) > theirs.get(count, 0) else "extra_at_bank",
                                        f"{count}: transaction {txn} ({kind}{' reversal' if reversal else ''} "
                                        f"of {gap}) explains the difference", txn))
    return found
