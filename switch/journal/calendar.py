"""Business dates: which day each connector's rows belong to, and the cutover that ends a day.

Why this exists: a bank settles by business date, not by clock time, and the switch must put
every movement of money on the same day the bank does. Each connector has exactly one open
date (a unique index says so); a row is stamped with it when it is created, which is when its
request is sent (the bank's own settlement date, field 15, may replace it when the answer
carries one), and a reversal with the date open when it is acknowledged.

The open dates are kept in memory and read on the reactor when a row is built, so stamping
costs no statement. A cutover changes the memory at once (every row built from then on gets
the new date) and the database in one commit; should that commit fail, the old date comes
back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from twisted.internet import defer

from switch.journal.again import until_known
from switch.journal.base import JournalBase, fails_as_deferred, log
from switch.journal.db import Db, Row
from switch.journal.errors import CutoverRefused, InvalidRecord
from switch.journal.models import BusinessDay, Transaction, from_us, optional_from_us
from switch.journal.store import transaction_from_row
from switch.journal.units import Call

_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")


def require_date(name: str, value: object) -> str:
    """A business date is ``YYYY-MM-DD`` text: it sorts, compares and reads the same on both backends."""
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise InvalidRecord(f"{name} must be a date YYYY-MM-DD, got {value!r}")
    return value


def _day(row: Row) -> BusinessDay:
    return BusinessDay(
        connector=row["connector"],
        business_date=row["business_date"],
        state=row["state"],
        opened_at=from_us(row["opened_at"]),
        closed_at=optional_from_us(row["closed_at"]),
        closed_by=row["closed_by"],
    )


def _open_missing(db: Db, initial: Mapping[str, str], now: int) -> dict[str, str]:
    for connector, date in initial.items():
        if db.one("SELECT 1 AS found FROM business_days WHERE connector = :c AND state = 'open'", {"c": connector}):
            continue
        latest = db.one("SELECT MAX(business_date) AS d FROM business_days WHERE connector = :c", {"c": connector})
        if latest and latest["d"] is not None and latest["d"] >= date:
            raise CutoverRefused(f"{connector}: cannot open {date}; {latest['d']} is already closed")
        db.execute(
            "INSERT INTO business_days (connector, business_date, state, opened_at) VALUES (:c, :d, 'open', :now)",
            {"c": connector, "d": date, "now": now},
        )
    rows = db.all("SELECT connector, business_date FROM business_days WHERE state = 'open'", {})
    return {row["connector"]: row["business_date"] for row in rows}


def _cutover(db: Db, connector: str, opened: str, by: str, now: int) -> BusinessDay:
    current = db.one("SELECT business_date FROM business_days WHERE connector = :c AND state = 'open'",
                     {"c": connector})
    if current is None:
        raise CutoverRefused(f"{connector} has no open business date")
    if opened <= current["business_date"]:
        raise CutoverRefused(f"{connector}: the new business date {opened} is not after {current['business_date']}")
    closed = db.one(
        "UPDATE business_days SET state = 'closed', closed_at = :now, closed_by = :by "
        "WHERE connector = :c AND state = 'open' RETURNING *",
        {"c": connector, "now": now, "by": by},
    )
    db.execute(
        "INSERT INTO business_days (connector, business_date, state, opened_at) VALUES (:c, :d, 'open', :now)",
        {"c": connector, "d": opened, "now": now},
    )
    return _day(closed)


def day_rows(db: Db, date: str, connector: str | None) -> list[Transaction]:
    where = "(business_date = :d OR reversal_business_date = :d)"
    params: dict[str, object] = {"d": date}
    if connector is not None:
        where += " AND connector = :c"
        params["c"] = connector
    rows = db.all(f"SELECT * FROM transactions WHERE {where} ORDER BY created_at, txn_id", params)
    return [transaction_from_row(row) for row in rows]


class CalendarApi(JournalBase):
    """Business dates per connector and the rows of a day (see the module docstring)."""

    @fails_as_deferred
    def open_business_days(self, initial: Mapping[str, str]) -> defer.Deferred[dict[str, str]]:
        """Open ``initial[connector]`` for each connector that has no open date; fires with every open date.
        Opened again if the journal cannot say whether they were (`until_known`): a date opens once."""
        dates = {connector: require_date(f"business date of {connector}", d) for connector, d in initial.items()}

        def loaded(open_dates: dict[str, str]) -> dict[str, str]:
            self._open_dates.update(open_dates)
            return dict(self._open_dates)

        opened = until_known(self._reactor, "open_business_days",
                             lambda: self._writer.submit(Call(_open_missing, dates, self._now())))
        return defer.ensureDeferred(opened).addCallback(loaded)

    def business_date(self, connector: str) -> str | None:
        """The date a row of ``connector`` created now is stamped with (None before `open_business_days`)."""
        return self._open_dates.get(connector)

    @fails_as_deferred
    def cutover(self, connector: str, opened: str, *, by: str) -> defer.Deferred[BusinessDay]:
        """Close ``connector``'s open date and open ``opened``, in one commit; fires with the closed day."""
        require_date("opened", opened)
        before = self._open_dates.get(connector)
        if before is None:
            raise CutoverRefused(f"{connector} has no open business date")
        if opened <= before:
            raise CutoverRefused(f"{connector}: the new business date {opened} is not after {before}")
        self._open_dates[connector] = opened
        now = self._now()

        def failed(reason: object) -> object:
            if self._open_dates.get(connector) == opened:
                self._open_dates[connector] = before
            return reason

        def done(closed: BusinessDay) -> BusinessDay:
            log.info("business_date_cutover", connector=connector, closed=closed.business_date, opened=opened, by=by)
            return closed

        return self._writer.submit(Call(_cutover, connector, opened, by, now)).addCallbacks(done, failed)

    def business_days(self, connector: str | None = None, limit: int = 100) -> defer.Deferred[list[BusinessDay]]:
        """Open and closed dates, newest first."""
        where, params = ("WHERE connector = :c", {"c": connector}) if connector else ("", {})

        def read(db: Db) -> list[BusinessDay]:
            rows = db.all(f"SELECT * FROM business_days {where} ORDER BY business_date DESC, connector "
                          f"LIMIT {int(limit)}", params)
            return [_day(row) for row in rows]

        return self._readers.read(read)

    @fails_as_deferred
    def day_rows(self, business_date: str, connector: str | None = None) -> defer.Deferred[list[Transaction]]:
        """Every row that moved (or reversed) money on ``business_date``: the input of totals and reports."""
        require_date("business_date", business_date)
        return self._readers.read(lambda db: day_rows(db, business_date, connector))
