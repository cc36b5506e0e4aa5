"""Day end on a deterministic clock: the scheduled cutover in the connector's time zone, the date it opens,
and reconciliation by message against banksim's own day (its `BankDay` answering the 0500)."""

from __future__ import annotations

from datetime import datetime, time, timezone
from pathlib import Path
from typing import Any

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from connectors.base import ConnectorPlugin
from switch.app import ensure_dev_keys
from switch.engine.dayend import DayEnd, DayEndOptions
from switch.engine.reconcile import differences
from switch.iso.dialect import load_dialect
from switch.iso.mti import network_response
from switch.journal import Journal, JournalConfig, SecretSource, Status, open_journal
from switch.journal.dayend import OPERATORS
from switch.tools.banksim import Ledger, load_accounts
from switch.tools.banksim.day import BankDay
from tests.e2e.harness import eventually
from tests.journal.test_journal import sale

PHNOM_PENH = "Asia/Phnom_Penh"  # UTC+7
EVENING = datetime(2026, 6, 15, 16, 0, tzinfo=timezone.utc).timestamp()  # 23:00 in Phnom Penh


class Profile:
    def __init__(self, dialect: str) -> None:
        self.dialect = load_dialect(dialect)
        self.acquirer_id = "400001"


class FakeBank:
    """A `switch.engine.bank.Bank` as day end uses it, answered by banksim's day logic on the same clock."""

    def __init__(self, clock: Clock, dialect: str = "iso87ascii") -> None:
        self.name = "bank_a"
        self.profile = Profile(dialect)
        self.plugin = ConnectorPlugin(self.profile.dialect)
        self.day = BankDay(Ledger(load_accounts()), self.profile.dialect.version, clock, "sim", "2026-06-15")
        self.sent: list[dict[str, str]] = []
        self._stans = iter(range(1, 1000))

    def reserve_stan(self, stan: str | None = None) -> str:
        return f"{next(self._stans):06d}"

    def release_stan(self, stan: str) -> None:
        pass

    def request(self, message: dict[str, str], timeout: float | None = None) -> Deferred[dict[str, str]]:
        self.sent.append(message)
        if message["t"][1] == "5":
            return succeed(self.day.reconcile(message))
        return succeed(self.day.answer_cutover(message, network_response(message, self.profile.dialect.version)))


@pytest_twisted.async_yield_fixture
async def journal(tmp_path: Path) -> Any:
    """A SQLite journal (the journal's own tests run both backends; here only the day end's use of it matters)."""
    keys = tmp_path / "keys"
    ensure_dev_keys(keys)
    config = JournalConfig(sqlite_path=tmp_path / "journal.sqlite3", pan_keys=SecretSource(file=keys / "pan-keys"),
                           pan_hash_secret=SecretSource(file=keys / "pan-hash-secret"))
    opened = await open_journal(config, reactor, registry=CollectorRegistry())
    yield opened
    await opened.close()


def day_end(clock: Clock, journal: Journal, bank: FakeBank, **options: Any) -> DayEnd:
    opts = DayEndOptions(**{"cutover_time": time(23, 59), "timezone": PHNOM_PENH, **options})
    return DayEnd(clock, journal, {"bank_a": bank}, {"bank_a": opts}, CollectorRegistry())  # type: ignore[dict-item]


@pytest_twisted.ensureDeferred
async def test_the_scheduled_cutover_runs_at_the_local_time_and_opens_the_day_it_ends_on(journal: Journal) -> None:
    clock = Clock()
    clock.advance(EVENING)
    bank = FakeBank(clock)
    ends = day_end(clock, journal, bank)
    assert ends.options["bank_a"].date_at(EVENING) == "2026-06-15"
    await journal.open_business_days({"bank_a": "2026-06-15"})
    ends.start()
    due = ends.metrics.cutover_due.labels("bank_a")._value.get()
    assert due == EVENING + 59 * 60
    clock.advance(59 * 60 - 1)
    assert bank.sent == [] and journal.business_date("bank_a") == "2026-06-15"
    clock.advance(1)
    await eventually(lambda: ends.metrics.cutover_due.labels("bank_a")._value.get() == due + 86400)
    assert journal.business_date("bank_a") == "2026-06-16" == bank.day.business_date
    assert [(m["t"], m["70"], m["15"]) for m in bank.sent] == [("0800", "201", "0616")]
    assert ends.metrics.cutovers.labels("bank_a", "scheduled")._value.get() == 1
    clock.advance(86400)
    await eventually(lambda: ends.metrics.cutover_due.labels("bank_a")._value.get() == due + 2 * 86400)
    assert journal.business_date("bank_a") == "2026-06-17"
    days = await journal.business_days("bank_a")
    assert [(d.business_date, d.state, d.closed_by) for d in days] == [
        ("2026-06-17", "open", None), ("2026-06-16", "closed", "scheduled"), ("2026-06-15", "closed", "scheduled")]
    ends.stop()
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_a_day_ended_by_hand_before_the_schedule_is_not_ended_twice(journal: Journal) -> None:
    clock = Clock()
    clock.advance(EVENING)
    bank = FakeBank(clock)
    ends = day_end(clock, journal, bank)
    await journal.open_business_days({"bank_a": "2026-06-15"})
    ends.start()
    assert (await ends.cutover("bank_a")).opened == "2026-06-16"  # an operator, at 23:00
    clock.advance(59 * 60)  # 23:59: the schedule finds the 16th already open
    assert journal.business_date("bank_a") == "2026-06-16" and len(bank.sent) == 1
    assert ends.metrics.cutover_due.labels("bank_a")._value.get() == EVENING + 59 * 60 + 86400
    ends.stop()


@pytest_twisted.ensureDeferred
async def test_after_an_outage_the_cutover_opens_the_current_business_day(journal: Journal) -> None:
    clock = Clock()
    clock.advance(EVENING)
    ends = day_end(clock, journal, FakeBank(clock))
    await journal.open_business_days({"bank_a": "2026-06-10"})
    result = await ends.cutover("bank_a")
    assert (result.closed, result.opened, result.trigger, result.reconciliation) == (
        "2026-06-10", "2026-06-15", "operator", "not_supported")


@pytest_twisted.ensureDeferred
async def test_a_reconciled_day_is_journalled_and_an_unbalanced_one_tells_operators(journal: Journal) -> None:
    clock = Clock()
    clock.advance(EVENING)
    bank = FakeBank(clock, "iso93ascii")
    ends = day_end(clock, journal, bank, reconciliation="message")
    await journal.open_business_days({"bank_a": "2026-06-15"})
    txn = await journal.create_transaction(sale(amount=1_250))
    await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED, auth_code="A1",
                             amount_authorized=1_250, amount_captured=1_250)
    result = await ends.cutover("bank_a")  # banksim never saw the sale: its day is empty
    assert (result.reconciliation, result.exceptions) == ("out_of_balance", 4)
    [message] = [m for m in bank.sent if m["t"] == "1500"]
    assert (message["76"], message["88"], message["97"], message["28"]) == (
        "0000000001", f"{1_250:016d}", f"C{1_250:016d}", "260615")
    [rec] = await journal.reconciliations("bank_a")
    assert (rec.result, rec.bank_totals["debits_count"], rec.switch_totals["debits_count"]) == ("out_of_balance", 0, 1)
    assert [(e.kind, e.txn_id) for e in rec.exceptions if e.txn_id] == [("missing_at_bank", txn.txn_id)]
    [event] = await journal.events_after([OPERATORS], 0)
    assert event.type == "reconciliation.out_of_balance" and event.payload["reconciliation_id"] == rec.reconciliation_id


def test_a_difference_names_no_transaction_when_several_could_explain_it() -> None:
    class Move:
        def __init__(self, txn_id: str) -> None:
            self.txn_id, self.kind, self.reversal, self.amount = txn_id, "debit", False, 500

    ours = {"debits_count": 2, "debits_amount": 1_000}
    found = differences(ours, {"debits_count": 1, "debits_amount": 500}, 1987, [Move("T1"), Move("T2")])
    assert [(e.kind, e.txn_id) for e in found] == [
        ("totals_mismatch", None), ("totals_mismatch", None)]
    assert differences(ours, ours, 1987, [Move("T1")]) == []
