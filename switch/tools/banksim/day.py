"""The simulated bank's day: its business date, cutover, and its own totals for reconciliation.

Why banksim keeps its own: a reconciliation is only a test of the switch if the other side
counts independently.  Every posting is stamped with the business date open when it was
made (`Ledger.business_date`); the totals of a date are computed from the ledger alone with
the rules of `switch.domain.settlement` (a reversal on the same business date as its
original cancels it; holds count as authorizations, sales and completions as debits,
refunds as credits), then compared field by field with the switch's 0500/1500.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import date
from typing import Any

import structlog
from twisted.internet.interfaces import IReactorTime

from switch.domain.businessday import following, local_date, nearest_date
from switch.domain.currency import by_numeric
from switch.iso.dialect import Message
from switch.iso.mti import network_code_field, response_mti, transmission_time
from switch.iso.totals import (
    CURRENCY_FIELD,
    DATE_FIELD,
    IN_BALANCE,
    OUT_OF_BALANCE,
    SETTLEMENT_CODE,
    TotalsError,
    compared,
    read_totals,
    totals_fields,
)
from switch.tools.banksim import codes
from switch.tools.banksim.codes import wire_code
from switch.tools.banksim.ledger import Ledger

log = structlog.get_logger("kswitch.banksim")

# posting kind -> (total it adds to, amount total or None for a count only)
_ORIGINALS = {
    "sale_debit": ("debits_count", "debits_amount"),
    "completion_debit": ("debits_count", "debits_amount"),
    "refund_credit": ("credits_count", "credits_amount"),
    "authorization_hold": ("authorizations_count", None),
}
_REVERSALS = {
    "reversal_credit": ("debit_reversals_count", "debit_reversals_amount"),
    "reversal_debit": ("credit_reversals_count", "credit_reversals_amount"),
    "reversal_release": ("authorization_reversals_count", None),
}
_ECHOED = ("7", "11", "15", "32", "50")
TOTALS = tuple(name for pair in (*_ORIGINALS.values(), *_REVERSALS.values()) for name in pair if name) + ("net",)
"""Every total a day has, zero when nothing counted towards it."""


def day_totals(db: sqlite3.Connection, business_date: str) -> dict[str, dict[str, int]]:
    """{currency alpha: totals} of ``business_date``, each posting counted ``settled`` times."""
    rows = db.execute(
        "SELECT p.kind, p.amount, p.currency, p.settled, p.reversed_by, r.business_date AS reversed_on, "
        "o.business_date AS original_on, o.amount AS original_amount FROM postings p "
        "LEFT JOIN postings r ON r.id = p.reversed_by LEFT JOIN postings o ON o.id = p.original "
        "WHERE p.business_date = ?", (business_date,))
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOTALS, 0))
    for row in rows:
        kind, currency = row["kind"], row["currency"]
        if currency is None:
            continue
        if kind in _ORIGINALS:
            if row["reversed_by"] is not None and row["reversed_on"] == business_date:
                continue  # reversed within the day: it never happened
            names = _ORIGINALS[kind]
        elif kind in _REVERSALS:
            if row["original_on"] == business_date:
                continue
            names = _REVERSALS[kind]
        else:
            continue
        weight = row["settled"]
        totals = out[currency]
        totals[names[0]] += weight
        if names[1] is not None:
            totals[names[1]] += weight * row["amount"]
    for totals in out.values():
        totals["net"] = (totals["debits_amount"] - totals["debit_reversals_amount"] - totals["credits_amount"]
                         + totals["credit_reversals_amount"])
    return {currency: dict(totals) for currency, totals in out.items()}


class BankDay:
    """banksim's open business date (UTC calendar date at start unless given), cutover and reconciliation."""

    def __init__(self, ledger: Ledger, dialect_version: int, clock: IReactorTime, name: str,
                 business_date: str | None = None) -> None:
        self.ledger = ledger
        self.version = dialect_version
        self.clock = clock
        self.name = name
        self.closed: list[str] = []
        self.reconciled: dict[tuple[str, str], dict[str, Any]] = {}
        """(business date, currency) -> what the switch sent, what banksim counted, the settlement code."""
        ledger.business_date = business_date or local_date(clock.seconds(), "UTC").isoformat()

    @property
    def business_date(self) -> str:
        assert self.ledger.business_date is not None
        return self.ledger.business_date

    def cutover(self, opened: str | None = None) -> tuple[str, str]:
        """Close the open date and open ``opened`` (a later date) or the next one: (closed, opened)."""
        closed = self.business_date
        new = opened if opened is not None and opened > closed else following(closed)
        self.ledger.business_date = new
        self.closed.append(closed)
        log.info("banksim_cutover", bank=self.name, closed=closed, opened=new)
        return closed, new

    def totals(self, business_date: str) -> dict[str, dict[str, int]]:
        return day_totals(self.ledger._db, business_date)

    def answer_cutover(self, request: Message, answer: Message) -> Message:
        """The switch cut over (0800/201, 1804/821): follow it; field 15 names the date we opened."""
        proposed = nearest_date(request.get(DATE_FIELD), date.fromisoformat(self.business_date))
        _, opened = self.cutover(proposed.isoformat() if proposed is not None else None)
        return {**answer, DATE_FIELD: date.fromisoformat(opened).strftime("%m%d")}

    def request_cutover(self) -> Message:
        """An 0800/201 (1804/821) the bank sends: our date is closed, field 15 is the one now open."""
        _, opened = self.cutover()
        now = self.clock.seconds()
        return {"t": "0800" if self.version == 1987 else "1804", "7": transmission_time(now),
                network_code_field(self.version): "201" if self.version == 1987 else "821",
                DATE_FIELD: date.fromisoformat(opened).strftime("%m%d")}

    def reconcile(self, request: Message) -> Message:
        """Answer a 0500/1500: our totals of that date and currency, in balance only if every total agrees."""
        answer = {n: request[n] for n in _ECHOED if n in request}
        answer["t"] = response_mti(request["t"])
        reference = date.fromisoformat(self.business_date)
        day = nearest_date(request.get(DATE_FIELD), reference)
        currency = by_numeric(request.get(CURRENCY_FIELD, ""))
        try:
            theirs = read_totals(request, self.version)
        except TotalsError as e:
            log.warning("banksim_reconciliation_unreadable", bank=self.name, reason=str(e))
            theirs = None
        if day is None or currency is None or theirs is None:
            answer.update({"39": wire_code(codes.FORMAT_ERROR, self.version), SETTLEMENT_CODE: "3"})
            return answer
        ours = self.totals(day.isoformat()).get(currency.alpha, {})
        names = compared(self.version)
        mine = {name: ours.get(name, 0) for name in names}
        code = IN_BALANCE if all(theirs[name] == mine[name] for name in names) else OUT_OF_BALANCE
        self.reconciled[(day.isoformat(), currency.alpha)] = {"switch": theirs, "bank": mine, "code": code}
        log.info("banksim_reconciliation", bank=self.name, business_date=day.isoformat(), currency=currency.alpha,
                 result="in_balance" if code == IN_BALANCE else "out_of_balance")
        answer.update(totals_fields(mine, self.version))
        answer.update({"39": wire_code(codes.APPROVED, self.version), SETTLEMENT_CODE: code})
        return answer

