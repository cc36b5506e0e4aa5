"""Payments waiting for the customer to confirm at the bank: their owner and their expiry.

Some banks answer an authorization with "customer action required" and a URL (see a
connector plugin's ``confirmation_url``).  Such a payment is journalled
``pending_customer_action`` and this object owns it until one of two things happens:

* the bank sends an advice (x120/x220) with the outcome: it is matched to the payment
  by original data elements (field 90 / 56: original STAN), else by RRN (37) and
  terminal (41), acknowledged with an approved x130/x230, and the payment becomes
  approved or declined with a ``payment.completed`` event;
* the connector's ``confirmation_timeout`` passes first: the payment becomes
  ``timeout`` with a ``payment.expired`` event and, since the bank may have approved
  it a moment ago, a reversal queued in the same commit.

Both are compare-and-set transitions from ``pending_customer_action``, so whichever
comes second changes nothing.  An end without money (declined, failed, expired) gives
back the cumulative risk counts the payment held, in the same commit.  Timers live on the reactor; after a restart, recovery
calls `rearm` for each waiting payment with the time it had left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import structlog
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from switch.domain.businessday import nearest_date
from switch.domain.status import Status
from switch.engine.engine import journalled_request, reversal_draft
from switch.engine.saf import StoreAndForward
from switch.iso.answercheck import reference, response_code
from switch.iso.dialect import Message
from switch.iso.masking import mask_message
from switch.iso.mti import approved_code, response_mti
from switch.iso.translate import original_reference
from switch.journal import Journal
from switch.journal.errors import TransitionRefused
from switch.journal.models import Direction, EventDraft, Transaction
from switch.journal.risk import RiskLedger

log = structlog.get_logger("kswitch.confirmation")

DEFAULT_TIMEOUT = 900.0
"""Seconds a payment may wait for the customer when the connector sets no ``confirmation_timeout``."""

ACK_ECHOED = ("3", "4", "7", "11", "12", "13", "24", "32", "37", "41", "42", "49", "56", "90")
"""Fields an advice acknowledgement echoes; never card or account data."""


@dataclass
class _Waiting:
    txn_id: str
    connector: str
    stan: str | None
    rrn: str | None
    terminal: str | None
    capture: bool
    amount: int
    timer: IDelayedCall


class Confirmations:
    def __init__(
        self,
        clock: IReactorTime,
        journal: Journal,
        banks: Mapping[str, Any],
        saf: StoreAndForward,
        timeouts: Mapping[str, float],
    ) -> None:
        self.clock = clock
        self.journal = journal
        self.banks = banks
        self.saf = saf
        self.timeouts = timeouts
        self._waiting: dict[str, _Waiting] = {}

    # -- owning a payment ---------------------------------------------------------------

    def watch(self, txn: Transaction, terminal: str | None, delay: float | None = None) -> None:
        """Own ``txn`` (journalled ``pending_customer_action``) until an advice or its expiry."""
        wait = self.timeouts.get(txn.connector, DEFAULT_TIMEOUT) if delay is None else max(delay, 0.0)
        timer = self.clock.callLater(wait, self._expire_later, txn.txn_id)
        self._waiting[txn.txn_id] = _Waiting(
            txn.txn_id, txn.connector, txn.stan, txn.rrn, terminal.strip() if terminal else None,
            txn.kind.value == "sale", txn.amount, timer,
        )
        log.info("awaiting_customer", txn_id=txn.txn_id, connector=txn.connector, expires_in=round(wait, 3))

    async def rearm(self, txn: Transaction) -> None:
        """After a restart: the expiry counts from when the payment started waiting."""
        left = self.timeouts.get(txn.connector, DEFAULT_TIMEOUT) - (self.clock.seconds() - txn.updated_at.timestamp())
        sent = await journalled_request(self.journal, txn)
        self.watch(txn, sent.get("41"), delay=left)

    def stop(self) -> None:
        """Cancel the timers (shutdown); the journal still says who is waiting, recovery re-arms."""
        for waiting in self._waiting.values():
            if waiting.timer.active():
                waiting.timer.cancel()
        self._waiting.clear()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- the bank's advice ----------------------------------------------------------------

    def advice(self, bank: Any, message: Message) -> Deferred[Message]:
        """Answer a bank-initiated advice: settle the payment it completes, then acknowledge.

        An advice is told, not asked: it is acknowledged even when it matches nothing
        waiting (already expired, or unknown), so the bank does not repeat it forever;
        that case is logged for the operator.
        """
        return ensureDeferred(self._advice(bank, message))

    async def _advice(self, bank: Any, message: Message) -> Message:
        waiting = self._match(bank.name, message)
        txn_id = waiting.txn_id if waiting is not None else None
        dialect = bank.profile.dialect
        await self.journal.append_message(txn_id=txn_id, direction=Direction.IN, connector=bank.name,
                                          mti=message["t"], fields=mask_message(message, dialect))
        if waiting is None:
            log.warning("customer_advice_unmatched", connector=bank.name, mti=message["t"], stan=message.get("11"),
                        rrn=message.get("37"))
        else:
            await self._complete(bank, waiting, message)
        ack = {k: v for k, v in message.items() if k in ACK_ECHOED}
        ack["t"] = response_mti(message["t"])
        ack["39"] = approved_code(bank.profile.version)
        await self.journal.append_message(txn_id=txn_id, direction=Direction.OUT, connector=bank.name,
                                          mti=ack["t"], fields=mask_message(ack, dialect))
        return ack

    def _match(self, connector: str, message: Message) -> _Waiting | None:
        candidates = [w for w in self._waiting.values() if w.connector == connector]
        ref = original_reference(message.get("90") or message.get("56"))
        if ref is not None:
            found = next((w for w in candidates if w.stan == ref[1]), None)
            if found is not None:
                return found
        rrn, terminal = message.get("37"), (message.get("41") or "").strip() or None
        return next((w for w in candidates if rrn is not None and w.rrn == rrn
                     and (terminal is None or w.terminal is None or w.terminal == terminal)), None)

    async def _complete(self, bank: Any, waiting: _Waiting, message: Message) -> None:
        code = response_code(message.get("39"))
        if code is None:
            await self._unreadable(bank, waiting)
            return
        outcome = bank.profile.responses.outcome(code)
        auth_code = reference(message.get("38"), 6)
        approved = outcome.status == "approved"
        status = Status.APPROVED if approved else Status.DECLINED if outcome.status == "declined" else Status.FAILED
        changes: dict[str, Any] = {"response_code": code, "auth_code": auth_code,
                                   **self._booked_on(bank.name, message)}
        if approved:
            changes["amount_authorized"] = waiting.amount
            if waiting.capture:
                changes["amount_captured"] = waiting.amount
        event = EventDraft("payment.completed", {
            "txn_id": waiting.txn_id, "status": "approved" if approved else "declined",
            "response_code": code, "reason": outcome.reason, "auth_code": auth_code,
        })
        try:
            await self.journal.transition(waiting.txn_id, expected_from=(Status.AWAITING_CUSTOMER,), to=status,
                                          reason=outcome.reason, forget_card=not approved, event=event,
                                          risk=None if approved else give_back, **changes)
        except TransitionRefused as e:
            log.warning("customer_advice_too_late", txn_id=waiting.txn_id, detail=str(e))
        else:
            log.info("customer_confirmed", txn_id=waiting.txn_id, connector=bank.name, response_code=code,
                     status=status.value)
        self._forget(waiting.txn_id)

    def _booked_on(self, connector: str, advice: Message) -> dict[str, str]:
        """The customer moved the money when they answered, not when the request was sent: the row takes
        the advice's settlement date (field 15), else the connector's date open now. A payment that
        waited across a cutover thus lands on the day the bank booked it, not on a day already closed."""
        current = self.journal.business_date(connector)
        if current is None:
            return {}
        booked = nearest_date(advice.get("15"), date.fromisoformat(current))
        return {"business_date": (booked or date.fromisoformat(current)).isoformat()}

    async def _unreadable(self, bank: Any, waiting: _Waiting) -> None:
        """An advice whose response code cannot be read may still mean the bank approved:
        the payment fails and is reversed in the same commit, as on expiry."""
        self._forget(waiting.txn_id)
        txn = await self.journal.get_transaction(waiting.txn_id)
        draft = await reversal_draft(self.journal, txn, bank)
        try:
            await self.journal.transition(
                waiting.txn_id, expected_from=(Status.AWAITING_CUSTOMER,), to=Status.FAILED, reason="format_error",
                saf=draft, risk=give_back, event=EventDraft("payment.completed", {
                    "txn_id": waiting.txn_id, "status": "failed", "response_code": None, "reason": "format_error",
                    "auth_code": None}),
            )
        except TransitionRefused as e:
            log.warning("customer_advice_too_late", txn_id=waiting.txn_id, detail=str(e))
            return
        log.warning("customer_advice_unreadable", txn_id=waiting.txn_id, connector=bank.name)
        self.saf.kick(bank.name)

    # -- expiry ---------------------------------------------------------------------------

    def _expire_later(self, txn_id: str) -> None:
        ensureDeferred(self._expire(txn_id)).addErrback(
            lambda f: log.error("customer_expiry_failed", txn_id=txn_id, error=f.getErrorMessage())
        )

    async def _expire(self, txn_id: str) -> None:
        """No advice in time: the bank may still have approved, so reverse (told, not asked)."""
        waiting = self._waiting.pop(txn_id, None)
        if waiting is None:
            return
        txn = await self.journal.get_transaction(txn_id)
        bank = self.banks[txn.connector]
        draft = await reversal_draft(self.journal, txn, bank)
        try:
            await self.journal.transition(
                txn_id, expected_from=(Status.AWAITING_CUSTOMER,), to=Status.TIMEOUT,
                reason="customer_action_expired", saf=draft, risk=give_back,
                event=EventDraft("payment.expired", {"txn_id": txn_id, "reason": "customer_action_expired"}),
            )
        except TransitionRefused as e:
            log.info("customer_expiry_after_outcome", txn_id=txn_id, detail=str(e))
            return
        log.warning("customer_action_expired", txn_id=txn_id, connector=txn.connector)
        self.saf.kick(txn.connector)

    def _forget(self, txn_id: str) -> None:
        waiting = self._waiting.pop(txn_id, None)
        if waiting is not None and waiting.timer.active():
            waiting.timer.cancel()


def give_back(ledger: RiskLedger, txn: Transaction) -> None:
    """A confirmation that ends without money gives the payment's cumulative risk counts back, in the
    commit that ends it (the decision journalled them: this works after a restart too)."""
    ledger.give_back(txn.txn_id)
