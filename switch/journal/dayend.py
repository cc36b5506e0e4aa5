"""Reconciliation results and their exceptions, journalled with the operators' event in one commit.

Why in the journal: a day that did not balance is money someone is owed; the record of it
(both sides' totals, and each difference with the transaction where one is known) must
outlive the process, and the event telling operators must not exist without it.  The rows
are general so that a reconciliation by file can add its exceptions beside these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from twisted.internet import defer

from switch.domain.settlement import Movement, on_date
from switch.journal import events
from switch.journal.base import JournalBase, fails_as_deferred
from switch.journal.calendar import day_rows, require_date
from switch.journal.db import Db
from switch.journal.models import EventDraft, from_us, require_id
from switch.journal.store import transaction_from_row
from switch.journal.units import Call

OPERATORS = "operators"
"""The event stream day-end events go to: a client allowed the merchant id ``operators`` subscribes to it."""
RESULTS = ("in_balance", "out_of_balance", "failed")


@dataclass(frozen=True)
class ExceptionDraft:
    """One difference found: ``kind`` (e.g. ``totals_mismatch``), the transaction when known, what differs."""

    kind: str
    detail: str
    txn_id: str | None = None


@dataclass(frozen=True)
class Reconciliation:
    reconciliation_id: int
    connector: str
    business_date: str
    currency: str
    method: str
    result: str
    switch_totals: dict[str, int]
    bank_totals: dict[str, int] | None
    at: datetime
    exceptions: tuple[ExceptionDraft, ...]


def _insert(db: Db, record: Mapping[str, Any], exceptions: Sequence[ExceptionDraft],
            event: EventDraft | None, now: int) -> int:
    row = db.one(
        "INSERT INTO reconciliations (connector, business_date, currency, method, result, switch_totals, "
        "bank_totals, at) VALUES (:connector, :business_date, :currency, :method, :result, :switch_totals, "
        ":bank_totals, :now) RETURNING reconciliation_id",
        {**record, "now": now},
    )
    assert row is not None
    rec_id = int(row["reconciliation_id"])
    for item in exceptions:
        db.execute(
            "INSERT INTO reconciliation_exceptions (reconciliation_id, connector, business_date, kind, txn_id, "
            "detail, at) VALUES (:rid, :connector, :business_date, :kind, :txn_id, :detail, :now)",
            {"rid": rec_id, "connector": record["connector"], "business_date": record["business_date"],
             "kind": item.kind, "txn_id": item.txn_id, "detail": item.detail, "now": now},
        )
    if event is not None:
        events.append(db, merchant_id=OPERATORS, txn_id=None, type=event.type,
                      payload=json.dumps({**event.payload, "reconciliation_id": rec_id}, sort_keys=True), now=now)
    return rec_id


def _read(db: Db, connector: str | None, business_date: str | None, limit: int) -> list[Reconciliation]:
    where, params = ["1 = 1"], {"limit": limit}
    if connector is not None:
        where.append("connector = :connector")
        params["connector"] = connector
    if business_date is not None:
        where.append("business_date = :business_date")
        params["business_date"] = business_date
    rows = db.all(f"SELECT * FROM reconciliations WHERE {' AND '.join(where)} "
                  "ORDER BY reconciliation_id DESC LIMIT :limit", params)
    out = []
    for row in rows:
        found = db.all("SELECT kind, detail, txn_id FROM reconciliation_exceptions WHERE reconciliation_id = :rid "
                       "ORDER BY exception_id", {"rid": row["reconciliation_id"]})
        out.append(Reconciliation(
            int(row["reconciliation_id"]), row["connector"], row["business_date"], row["currency"], row["method"],
            row["result"], json.loads(row["switch_totals"]),
            json.loads(row["bank_totals"]) if row["bank_totals"] is not None else None,
            from_us(row["at"]), tuple(ExceptionDraft(e["kind"], e["detail"], e["txn_id"]) for e in found),
        ))
    return out


def _movements(db: Db, business_date: str, connector: str | None) -> list[Movement]:
    rows = day_rows(db, business_date, connector)
    parents = {row.txn_id: row for row in rows}
    for txn_id in {row.parent_txn_id for row in rows if row.parent_txn_id} - parents.keys():
        found = db.one("SELECT * FROM transactions WHERE txn_id = :t", {"t": txn_id})
        if found is not None:
            parents[txn_id] = transaction_from_row(found)
    return on_date(rows, parents, business_date)


class DayEndApi(JournalBase):
    @fails_as_deferred
    def day_movements(self, business_date: str, connector: str | None = None) -> defer.Deferred[list[Movement]]:
        """What moved on ``business_date`` (`switch.domain.settlement.on_date` over `day_rows` and the parents
        of its voids), classified on a reader thread: a day of many rows never stalls the reactor."""
        require_date("business_date", business_date)
        return self._readers.read(lambda db: _movements(db, business_date, connector))

    @fails_as_deferred
    def record_reconciliation(
        self, connector: str, business_date: str, currency: str, *, method: str, result: str,
        switch_totals: Mapping[str, int], bank_totals: Mapping[str, int] | None,
        exceptions: Sequence[ExceptionDraft] = (), event: EventDraft | None = None,
    ) -> defer.Deferred[int]:
        """One reconciliation of a connector's closed date in one currency, its exceptions and (for an
        out-of-balance day) the operators' event, in one commit; fires with the reconciliation's id."""
        require_id("connector", connector)
        if result not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(RESULTS)}, got {result!r}")
        record = {"connector": connector, "business_date": business_date, "currency": currency, "method": method,
                  "result": result, "switch_totals": json.dumps(dict(switch_totals), sort_keys=True),
                  "bank_totals": json.dumps(dict(bank_totals), sort_keys=True) if bank_totals is not None else None}
        now = self._now()
        return self._writer.submit(Call(_insert, record, tuple(exceptions), event, now))

    @fails_as_deferred
    def reconciliations(self, connector: str | None = None, business_date: str | None = None,
                        limit: int = 100) -> defer.Deferred[list[Reconciliation]]:
        """Reconciliations, newest first, each with its exceptions."""
        return self._readers.read(lambda db: _read(db, connector, business_date, limit))
