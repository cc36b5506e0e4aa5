"""A payment waiting on its bank, and the commit of its outcome.

Why it exists: with 10,000 payments held at a slow bank, each one kept a chain of suspended
coroutine frames (idempotency join, routing, risk, send) and the Deferreds between them, about
10 KB a payment. A payment written to its bank is now one `InFlightPayment` (slots, no frame),
reached only from the mux's pending entry, which tells it the answer (`switch.domain.answering`); the
coroutines that journal its outcome (`PaymentOutcomes`) run only once the bank has answered, timed
out or the link dropped, and finish in a few commits. It tells its own answer target (the socket API's
exchange, or the idempotency key's entry) after the outcome is durably committed, as before.
"""

from __future__ import annotations

import functools
from typing import Any

import structlog
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from switch.domain.answering import Answerable
from switch.domain.model import AuthorizeRequest
from switch.domain.status import Kind, Status
from switch.engine.bank import Bank
from switch.engine.confirmation import Confirmations
from switch.engine.engine import (
    Answered,
    Engine,
    NotSent,
    Outcome,
    PaymentMetrics,
    Uncertain,
    answer_columns,
    not_answered,
    resolution_draft,
    settlement_column,
)
from switch.engine.recommit import commit_outcome, end_unrecorded
from switch.engine.risk import RiskStage, Verdict
from switch.engine.saf import StoreAndForward
from switch.engine.sent import field, pack, unpack
from switch.engine.status import API_STATUS, answer
from switch.iso.dialect import Message
from switch.iso.translate import sealed_instrument
from switch.journal import Journal
from switch.journal.ids import txn_text
from switch.journal.models import EventDraft, Received, Transaction

JOURNAL_UNAVAILABLE = "journal_unavailable"

log = structlog.get_logger("kswitch.payments")


class InFlightPayment:
    """What a payment written to its bank needs to commit its outcome and answer the web tier: no more.

    ``answered`` is who waits on the payment (the socket API's exchange, the idempotency key's entry, a
    Deferred); `message` the request as sent (the plugin
    checks the answer's echoes against it, and an uncertain outcome's reversal is built from it),
    kept as the values that differ from messages built alike (`switch.engine.sent`). ``verdict`` is the
    risk stage's decision journalled with the request (None without risk rules): of its screening, all the
    outcome needs (`RiskStage.outcome_closing`).

    Its bank and the `PaymentOutcomes` that commit its outcome are the same for every payment to one bank:
    they are its class's (`payments_to`), not two slots of each payment, which takes a payment held from 96
    bytes to 80 (issue 13's memory target).
    """

    # No slot for what the request already holds (kind), nor for what its class holds (bank, outcomes).
    __slots__ = ("_txn", "request", "_layout", "_kept", "verdict", "answered")
    bank: Bank
    outcomes: PaymentOutcomes

    def __init__(self, txn: str | int, request: AuthorizeRequest, message: Message, verdict: Verdict | None,
                 answered: Answerable[dict[str, Any]]) -> None:
        self._txn = txn  # the id, or the number it spells (`switch.journal.ids.new_txn`): 48 bytes, not 80
        self.request = request
        self._layout, self._kept = pack(message)
        self.verdict = verdict
        self.answered = answered

    @property
    def txn_id(self) -> str:
        txn = self._txn
        if type(txn) is int:  # spelled once, when the outcome comes: the payment is about to end
            txn = self._txn = txn_text(txn)
        return txn  # type: ignore[return-value]

    @property
    def kind(self) -> Kind:
        return Kind.SALE if self.request.capture else Kind.AUTHORIZATION

    @property
    def message(self) -> Message:
        return unpack(self._layout, self._kept)

    def sent(self, number: str) -> str | None:
        """One field of the request as sent, without building the whole `message` (an approval needs field 37)."""
        return field(self._layout, self._kept, number)

    def callback(self, response: Message) -> None:
        """The bank's answer (the mux tells the payment itself, `switch.domain.answering.Answerable`): commit the
        outcome with the answer in its commit, then tell `answered`."""
        engine = self.outcomes.engine
        try:
            received = engine.received(self.bank, response)
            outcome = engine.read_answer(response, self.txn_id, self.bank, self.message)
        except Exception:
            self._concluded(Failure())
            return
        self._conclude(outcome, received)

    def errback(self, reason: Exception | Failure) -> None:
        """No answer came, or the request was not sent (`switch.domain.answering.Answerable`)."""
        outcome = not_answered(reason if isinstance(reason, Failure) else Failure(reason))
        if isinstance(outcome, Failure):
            self._concluded(outcome)
        else:
            self._conclude(outcome)

    def _conclude(self, outcome: Outcome, received: Received | None = None) -> None:
        self.outcomes.conclude(outcome, self, received).addBoth(self._concluded)

    def _concluded(self, result: dict[str, Any] | Failure) -> None:
        """Answer the web tier, ending the bank's ``active`` count begun when the payment was routed."""
        self.bank.active -= 1
        if isinstance(result, Failure):
            self.answered.errback(result)
        else:
            self.answered.callback(result)


def payments_to(bank: Bank, outcomes: PaymentOutcomes) -> type[InFlightPayment]:
    """The class of payments written to ``bank`` whose outcomes ``outcomes`` commits (one per bank and service)."""
    return type("InFlightPayment", (InFlightPayment,), {"__slots__": (), "bank": bank, "outcomes": outcomes})


class PaymentOutcomes:
    """Journals a payment's outcome with the risk stage's part of it in the same commit: approved (with
    the fees of a sale), declined, failed, awaiting the customer, or uncertain with its reversal queued."""

    def __init__(self, engine: Engine, journal: Journal, saf: StoreAndForward, metrics: PaymentMetrics,
                 confirmations: Confirmations | None, risk: RiskStage | None = None) -> None:
        self.engine = engine
        self.journal = journal
        self.saf = saf
        self.metrics = metrics
        self.confirmations = confirmations
        self.risk = risk

    def conclude(self, outcome: Outcome, p: InFlightPayment, received: Received | None = None
                 ) -> Deferred[dict[str, Any]]:
        """Journal ``outcome`` with ``received`` (the bank's answer, if one came) in its commit."""
        return ensureDeferred(self._conclude(outcome, p, received))

    async def _conclude(self, outcome: Outcome, p: InFlightPayment, received: Received | None) -> dict[str, Any]:
        if isinstance(outcome, NotSent):
            result = await self.finish(p.txn_id, p.kind, p.bank, Status.FAILED, p.request, p.verdict, reason=outcome.reason,
                                       forget_card=True)
        elif isinstance(outcome, Uncertain):
            result = await self._uncertain(p, outcome, received)
        elif outcome.answer.confirmation_url is not None and self.confirmations is not None:
            result = await self._awaiting_customer(p, outcome.response, outcome.answer.confirmation_url, received)
        else:
            result = await self._answered(p, outcome, received)
        verdict = p.verdict
        if verdict is None:
            return result
        if verdict.action == "review":
            await self._flag_review(p.request.merchant_id, p.txn_id, verdict, result["status"])
        flag = verdict.answer_field()
        return {**result, "risk": flag} if flag is not None else result

    async def _flag_review(self, merchant_id: str, txn_id: str, verdict: Verdict, status: str) -> None:
        try:  # the payment's outcome is journalled and stands: a failure here only loses the event
            await self.journal.append_event(merchant_id, EventDraft("payment.review", {
                "txn_id": txn_id, "rule": verdict.rule, "status": status}), txn_id=txn_id)
        except Exception as e:
            log.error("risk_review_not_recorded", txn_id=txn_id, status=status, error=str(e))

    async def _answered(self, p: InFlightPayment, outcome: Answered, received: Received | None) -> dict[str, Any]:
        a, req, bank = outcome.answer, p.request, p.bank
        changes: dict[str, Any] = {**answer_columns(a, p.sent("37")),
                                   **settlement_column(self.journal, bank.name, a)}
        if a.status == "approved":
            approved = a.amount if a.amount is not None else req.amount
            changes["amount_authorized"] = approved
            if req.capture:  # a sale: its fees go with the approval, in the same UPDATE
                changes["amount_captured"] = approved
                changes.update(self.journal.sale_fees(bank.name, req.merchant_id, req.currency.alpha,
                                                      req.instrument.masked, approved))
            status = Status.APPROVED
        else:
            status = Status.DECLINED if a.status == "declined" else Status.FAILED
        return await self.finish(p.txn_id, p.kind, bank, status, req, p.verdict, reason=a.reason,
                                 forget_card=status is not Status.APPROVED, received=received, **changes)

    async def _awaiting_customer(self, p: InFlightPayment, response: Message, url: str,
                                 received: Received | None) -> dict[str, Any]:
        """The bank waits for the customer: journal that, hand the payment to its owner, answer with the URL."""
        sent = p.message
        txn = await self.journal.transition(
            p.txn_id, expected_from=(Status.PENDING,), to=Status.AWAITING_CUSTOMER, reason="customer_action_required",
            response_code=response.get("39"), rrn=response.get("37") or sent.get("37"), received=received,
        )
        assert self.confirmations is not None
        self.confirmations.watch(txn, sent.get("41"))
        self.metrics.child(self.metrics.outcomes, p.bank.name, p.kind.value, API_STATUS[txn.status]).inc()
        return {**answer(txn), "confirmation_url": url}

    async def _uncertain(self, p: InFlightPayment, outcome: Uncertain, received: Received | None) -> dict[str, Any]:
        """The bank may have approved: queue the reversal in the same commit as the answer. No answer
        (timeout, link lost) is answered ``timeout``; an answer the plugin does not believe is
        answered as it reads it (``failed``, e.g. ``format_error``): the reversal makes that true."""
        bank, sent = p.bank, p.message
        self.metrics.reversals_queued.labels(bank.name, outcome.cause).inc()
        saf = resolution_draft(bank, sent, sealed_instrument(p.request.instrument))
        a = outcome.answer
        if a is None:
            result = await self.finish(p.txn_id, p.kind, bank, Status.TIMEOUT, p.request, p.verdict, reason="issuer_timeout",
                                       saf=saf, received=received)  # an answer its plugin could not read
        else:
            status = Status.DECLINED if a.status == "declined" else Status.FAILED
            result = await self.finish(p.txn_id, p.kind, bank, status, p.request, p.verdict, reason=a.reason, saf=saf,
                                       forget_card=True, received=received, **answer_columns(a, sent.get("37")))
        self.saf.kick(bank.name)
        return result

    def fail_unrecorded(self, txn_id: str, kind: Kind, bank: Bank, req: AuthorizeRequest,
                        verdict: Verdict | None) -> Deferred[None]:
        """End a payment whose first commit the journal could not confirm (`NotRecorded`: its writer process died
        with the batch, say) and that was therefore never written to its bank: if that commit happened, the
        payment is ``failed`` (``journal_unavailable``) with its risk counts given back, as one never sent is;
        committed again while the journal cannot say (`switch.engine.recommit`). Until then a replay of its
        idempotency key is answered ``busy``, and the web tier's next replay learns the outcome."""
        return ensureDeferred(self._fail_unrecorded(txn_id, kind, bank, req, verdict))

    async def _fail_unrecorded(self, txn_id: str, kind: Kind, bank: Bank, req: AuthorizeRequest,
                               verdict: Verdict | None) -> None:
        await end_unrecorded(  # `finish` commits again while the journal cannot say (`switch.engine.recommit`)
            "payment", lambda: self.finish(txn_id, kind, bank, Status.FAILED, req, verdict, reason=JOURNAL_UNAVAILABLE,
                                           forget_card=True),
            txn_id=txn_id, connector=bank.name)

    async def finish(self, txn_id: str, kind: Kind, bank: Bank, status: Status, req: AuthorizeRequest,
                     verdict: Verdict | None, **changes: Any) -> dict[str, Any]:
        """Journal the payment's outcome, with the risk stage's part of it and the bank's answer (``received``)
        in the same commit."""
        risk = self.risk.outcome_closing(req, verdict, API_STATUS[status]) if self.risk is not None else None
        moved = await commit_outcome(
            self.engine.clock, self.journal, txn_id,
            lambda: self.journal.transition(txn_id, expected_from=(Status.PENDING,), to=status, risk=risk, **changes),
            functools.partial(_landed, risk is not None))
        if risk is None:
            txn = moved
        else:  # the holds the closing put come back with the payment (it ran on the writer's copy)
            txn, held = moved
            risk.log_holds(held)
        self.metrics.child(self.metrics.outcomes, bank.name, kind.value, API_STATUS[status]).inc()
        return answer(txn)


async def _landed(with_risk: bool, txn: Transaction) -> Transaction | tuple[Transaction, tuple[()]]:
    """An outcome found committed after its commit was unknown: the holds its risk closing put are not known here."""
    return (txn, ()) if with_risk else txn
