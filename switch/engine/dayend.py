"""Day end: cutover per connector (scheduled, bank-initiated or by an operator) and reconciliation by message.

Why one owner: whichever side ends the day, the same steps follow in the same order, so the
in-flight rule holds for all three triggers:

1. the journal closes the connector's open business date and opens the next in one commit
   (`Journal.cutover`): from that moment new payments carry the new date, and every
   operation keeps the date it was sent on (or the bank's field 15);
2. the bank is told (switch-initiated: 0800/201, 1804/821 with the new date in field 15) or
   answered (bank-initiated: 0810/1814, at once after the commit);
3. the closed date's operations still in flight are waited for (at most ``in_flight_wait``,
   by default the connector's request timeout plus `GRACE`): their outcome belongs to that day;
4. the day's totals (`switch.domain.settlement`) go to the bank in a 0500/1500 per currency
   when the connector reconciles by message, and the verdict is journalled with its exceptions
   and, out of balance, an event to operators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater

from switch.domain.businessday import following, local_date, mmdd, nearest_date, next_cutover
from switch.domain.settlement import DayTotals, Movement
from switch.domain.status import Status
from switch.engine.bank import Bank
from switch.engine.reconcile import differences, request_message, verdict
from switch.iso.dialect import Message
from switch.iso.mti import approved_code, network_code_field, network_request, network_response
from switch.iso.totals import DATE_FIELD
from switch.journal import Journal
from switch.journal.dayend import ExceptionDraft
from switch.journal.models import EventDraft
from switch.observe.metrics import Counter, Gauge, MetricBundle

log = structlog.get_logger("kswitch.dayend")
GRACE = 5.0
"""Seconds beyond the request timeout a cutover waits for the closed date's operations in flight."""
POLL = 0.25
RETRY = 60.0
"""Seconds before a failed scheduled cutover is tried again."""
TRIGGERS = ("bank", "scheduled", "operator")
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class DayEndOptions:
    """One connector's day end. ``cutover_time`` (local, in ``timezone``) None: no scheduled cutover;
    ``reconciliation`` "message" or "none"; ``in_flight_wait`` seconds (see the module's step 3)."""

    cutover_time: time | None = None
    timezone: str = "UTC"
    reconciliation: str = "none"
    in_flight_wait: float = 35.0

    def date_at(self, now: float) -> str:
        """The business date that Unix time ``now`` falls in: with a scheduled cutover, a business day is
        named after the local date it ends on (23:59 on the 15th opens the 16th; 22:00 on the 15th opens
        the 16th too), without one it is the local calendar date."""
        if self.cutover_time is None:
            return local_date(now, self.timezone).isoformat()
        return local_date(next_cutover(now, self.cutover_time, self.timezone) - 1, self.timezone).isoformat()


@dataclass(frozen=True)
class CutoverResult:
    bank: str
    closed: str
    opened: str
    trigger: str
    reconciliation: str  # in_balance | out_of_balance | not_supported | failed
    exceptions: int = 0

    def public(self) -> dict[str, Any]:
        return {"bank": self.bank, "closed": self.closed, "opened": self.opened, "trigger": self.trigger,
                "reconciliation": self.reconciliation, "exceptions": self.exceptions}


class CutoverBusy(RuntimeError):
    """A cutover of this connector is already running."""


class DayEndMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.business_date = Gauge("kswitch_business_date_days", "The connector's open business date, in days "
                                   "since 1970-01-01", ["connector"], registry=registry)
        self.cutover_due = Gauge("kswitch_cutover_due_timestamp_seconds", "When the next scheduled cutover is due "
                                 "(Unix time)", ["connector"], registry=registry)
        self.cutovers = Counter("kswitch_cutovers_total", "Cutovers, by connector and trigger (bank, scheduled, "
                                "operator)", ["connector", "trigger"], registry=registry)
        self.reconciliations = Counter("kswitch_reconciliations_total", "Reconciliations of a closed date per "
                                       "currency, by result", ["connector", "result"], registry=registry)
        self.in_balance = Gauge("kswitch_reconciliation_in_balance", "1 when the connector's last reconciliation "
                                "balanced, 0 when it did not (or failed)", ["connector"], registry=registry)
        self.exceptions = Counter("kswitch_reconciliation_exceptions_total", "Reconciliation exceptions recorded",
                                  ["connector"], registry=registry)


class DayEnd:
    """Cutover and reconciliation of every connector; ``start`` schedules the configured cutovers."""

    def __init__(self, clock: IReactorTime, journal: Journal, banks: Mapping[str, Bank],
                 options: Mapping[str, DayEndOptions], registry: CollectorRegistry) -> None:
        self.clock = clock
        self.journal = journal
        self.banks = banks
        self.options = {name: options.get(name, DayEndOptions()) for name in banks}
        self.metrics = DayEndMetrics.on(registry)
        self._timers: dict[str, IDelayedCall] = {}
        self._running: set[str] = set()

    # -- scheduling ---------------------------------------------------------------------

    def start(self) -> None:
        for name, opts in self.options.items():
            self._show_date(name)
            self.metrics.in_balance.labels(name)
            for trigger in TRIGGERS:
                self.metrics.cutovers.labels(name, trigger)
            if opts.cutover_time is not None:
                self._schedule(name)

    def stop(self) -> None:
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def _schedule(self, name: str) -> None:
        opts = self.options[name]
        assert opts.cutover_time is not None
        now = self.clock.seconds()
        due = next_cutover(now, opts.cutover_time, opts.timezone)
        self.metrics.cutover_due.labels(name).set(due)
        self._timers[name] = self.clock.callLater(due - now, self._scheduled, name)

    def _scheduled(self, name: str) -> None:
        """Cut over unless the day was already ended (an operator or the bank got there first); a cutover
        that fails is tried again every `RETRY` seconds, and the due time stays (the missed-cutover alert)."""
        current = self.journal.business_date(name)
        if current is not None and current >= self.options[name].date_at(self.clock.seconds()):
            log.info("scheduled_cutover_skipped", connector=name, business_date=current, reason="already cut over")
            self._schedule(name)
            return
        done = self.cutover(name, "scheduled")

        def failed(failure: Any) -> None:
            log.error("cutover_failed", connector=name, trigger="scheduled", error=failure.getErrorMessage(),
                      retry_in=RETRY)
            self._timers[name] = self.clock.callLater(RETRY, self._scheduled, name)

        done.addCallbacks(lambda _: self._schedule(name), failed)

    # -- the three triggers -------------------------------------------------------------

    def cutover(self, name: str, trigger: str = "operator") -> Deferred[CutoverResult]:
        """Close ``name``'s business date and open the next (the later of the day after and today in
        the connector's time zone), tell the bank, reconcile. KeyError for an unknown connector."""
        bank = self.banks[name]
        return ensureDeferred(self._run(bank, trigger, self._next_date(name), None))

    def bank_cutover(self, bank: Bank, message: Message) -> Deferred[Message]:
        """A bank-initiated 0800/201 (1804/821): cut over to the bank's field 15 (when later than our
        open date, else the day after), answer once the journal committed, then reconcile."""
        answered: Deferred[Message] = Deferred()
        opened = self._next_date(bank.name)
        current = self.journal.business_date(bank.name)
        told = nearest_date(message.get(DATE_FIELD), date.fromisoformat(current)) if current else None
        if told is not None and current is not None and told.isoformat() > current:
            opened = told.isoformat()
        result = ensureDeferred(self._run(bank, "bank", opened, (message, answered)))

        def failed(failure: Any) -> None:
            log.error("cutover_failed", connector=bank.name, trigger="bank", error=failure.getErrorMessage())
            if not answered.called:
                answered.callback(network_response(message, bank.profile.dialect.version, "96" if
                                                   bank.profile.dialect.version == 1987 else "909"))

        result.addErrback(failed)
        return answered

    def _next_date(self, name: str) -> str:
        """The day after the open one, or later: the business date of now (`DayEndOptions.date_at`) when the
        switch was down over a cutover."""
        current = self.journal.business_date(name)
        today = self.options[name].date_at(self.clock.seconds())
        return today if current is None else max(following(current), today)

    async def _run(self, bank: Bank, trigger: str, opened: str,
                   from_bank: tuple[Message, Deferred[Message]] | None) -> CutoverResult:
        name = bank.name
        if name in self._running:
            raise CutoverBusy(f"a cutover of {name} is already running")
        self._running.add(name)
        try:
            closed = (await self.journal.cutover(name, opened, by=trigger)).business_date
            self.metrics.cutovers.labels(name, trigger).inc()
            self._show_date(name)
            log.info("cutover", connector=name, trigger=trigger, closed=closed, opened=opened)
            version = bank.profile.dialect.version
            if from_bank is not None:
                request, answered = from_bank
                answered.callback({**network_response(request, version), DATE_FIELD: mmdd(date.fromisoformat(opened))})
            else:
                await self._tell_bank(bank, opened)
            await self._in_flight(name, closed)
            result, exceptions = await self._reconcile(bank, closed)
            return CutoverResult(name, closed, opened, trigger, result, exceptions)
        finally:
            self._running.discard(name)

    async def _tell_bank(self, bank: Bank, opened: str) -> None:
        """0800/201 with the new date; the bank's refusal or silence is logged, our date stays changed
        (the day's reconciliation shows whether the bank followed)."""
        version = bank.profile.dialect.version
        message = network_request("cutover", version, self.clock.seconds())
        message[DATE_FIELD] = mmdd(date.fromisoformat(opened))
        message["11"] = bank.reserve_stan()
        try:
            response = await bank.request(bank.plugin.network(message))
        except Exception as e:  # every mux error: the bank did not answer
            log.warning("cutover_unanswered", connector=bank.name, error=str(e))
            return
        if response.get("39") != approved_code(version):
            log.warning("cutover_refused_by_bank", connector=bank.name, response_code=response.get("39"),
                        code_field=network_code_field(version))

    async def _in_flight(self, name: str, closed: str) -> None:
        """Wait (bounded) until no operation of the closed date waits for the bank's answer."""
        deadline = self.clock.seconds() + self.options[name].in_flight_wait
        while True:
            rows = await self.journal.day_rows(closed, name)
            waiting = [r.txn_id for r in rows if r.status is Status.PENDING]
            if not waiting:
                return
            if self.clock.seconds() >= deadline:
                log.warning("cutover_in_flight_unresolved", connector=name, business_date=closed, txn_ids=waiting)
                return
            await deferLater(self.clock, POLL, lambda: None)

    async def _reconcile(self, bank: Bank, closed: str) -> tuple[str, int]:
        name = bank.name
        if self.options[name].reconciliation != "message":
            return "not_supported", 0
        by_currency, moves = await self.day_totals(name, closed)
        results, exceptions = [], 0
        for currency, totals in sorted(by_currency.items()):
            result, count = await self._reconcile_currency(bank, closed, currency, totals, moves.get(currency, []))
            results.append(result)
            exceptions += count
        for result in ("failed", "out_of_balance", "in_balance"):
            if result in results:
                return result, exceptions
        return "in_balance", 0  # nothing moved on this date: nothing to disagree about

    async def _reconcile_currency(self, bank: Bank, closed: str, currency: str, totals: dict[str, int],
                                  moves: list[Any]) -> tuple[str, int]:
        name, version = bank.name, bank.profile.dialect.version
        stan = bank.reserve_stan()
        try:
            message = request_message(bank, totals, currency, date.fromisoformat(closed), stan, self.clock.seconds())
        except Exception:
            bank.release_stan(stan)
            raise
        try:
            response = await bank.request(bank.plugin.reconciliation(message, totals))
        except Exception as e:  # no answer: the day is not reconciled
            outcome, theirs, detail = "failed", None, f"no answer: {e}"
        else:
            found = verdict(response, version)
            outcome, theirs, detail = found.result, found.bank_totals, found.detail
        exceptions = differences(totals, theirs, version, moves) if outcome == "out_of_balance" and theirs else []
        if outcome == "failed":
            exceptions = [ExceptionDraft("reconciliation_failed", detail)]
        event = None
        if outcome != "in_balance":
            event = EventDraft(f"reconciliation.{outcome}", {"connector": name, "business_date": closed,
                                                           "currency": currency, "exceptions": len(exceptions)})
        await self.journal.record_reconciliation(name, closed, currency, method="message", result=outcome,
                                                 switch_totals=totals, bank_totals=theirs, exceptions=exceptions,
                                                 event=event)
        self.metrics.reconciliations.labels(name, outcome).inc()
        self.metrics.in_balance.labels(name).set(1 if outcome == "in_balance" else 0)
        self.metrics.exceptions.labels(name).inc(len(exceptions))
        log.log(20 if outcome == "in_balance" else 40, "reconciliation", connector=name, business_date=closed,
                currency=currency, result=outcome, exceptions=len(exceptions), detail=detail or None)
        return outcome, len(exceptions)

    async def day_totals(self, name: str, day: str) -> tuple[dict[str, dict[str, int]], dict[str, list[Movement]]]:
        """({currency: totals}, {currency: movements}) of ``name`` on business date ``day``."""
        moves = await self.journal.day_movements(day, name)
        by_currency: dict[str, list[Movement]] = {}
        for move in moves:
            by_currency.setdefault(move.currency, []).append(move)
        totals = {currency: {k: v for k, v in found.as_dict().items() if isinstance(v, int)}
                  for (_, currency), found in DayTotals.from_movements(moves).items()}
        return totals, by_currency

    def _show_date(self, name: str) -> None:
        current = self.journal.business_date(name)
        if current is not None:
            self.metrics.business_date.labels(name).set((date.fromisoformat(current) - _EPOCH).days)

