"""The payment service: one canonical payment in, one final answer out, every step journalled.

The order of work is what keeps money safe:

1. validate and route (nothing written anywhere yet: a failure here is simply ``failed``);
2. journal the transaction, its card (encrypted) and the outgoing request *durably*,
   so that a crash from here on leaves a record that recovery will reverse;
3. write the request to a bank link; a failure before the write is ``failed`` (the bank
   never saw it), a failure after it (timeout, link lost) is uncertain: answered
   ``timeout`` and a reversal is queued in the same database transaction;
4. journal the bank's answer durably, and only then answer the web tier.

Building, encode-checking, sending and classifying the answer go through
`switch.engine.engine` (the same path every capture, refund and void takes); a request the
bank's dialect cannot carry is ``failed`` (reason ``message_not_encodable``) with
nothing journalled as sent.

Fallback to the next connector of a route happens only in step 1, while no bank has
seen the request.

A bank may answer "customer action required" (its plugin finds a confirmation URL):
the payment is then journalled ``pending_customer_action``, the web tier gets that
status with the URL, and `switch.engine.confirmation` owns it until the bank's advice or
its expiry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from connectors.base import ConnectorPlugin, PaymentContext
from switch.domain.answering import Answerable
from switch.domain.errors import Busy, IdempotencyConflict, InvalidRequest, NotFound, NotRecorded
from switch.domain.merchant import MerchantConfig, StoreConfig
from switch.domain.model import AuthorizeRequest, BankAccountInstrument, CardInstrument, LifecycleRequest
from switch.domain.status import Kind, Status
from switch.engine.bank import Bank
from switch.engine.confirmation import Confirmations
from switch.engine.engine import NOT_ENCODABLE, Engine, NotEncodable, PaymentMetrics, operation_view
from switch.engine.idempotency import KeyedOnce, check_same
from switch.engine.inflight import InFlightPayment, PaymentOutcomes, payments_to
from switch.engine.late import match_late
from switch.engine.lifecycle import Lifecycle
from switch.engine.risk import RiskStage
from switch.engine.router import RouteQuery, Router
from switch.engine.saf import StoreAndForward
from switch.engine.status import API_STATUS, answer, net_fees
from switch.iso.dialect import Message
from switch.iso.masking import mask_message
from switch.iso.translate import Acceptor, carries_accounts, financial_request, sealed_instrument
from switch.journal import Journal
from switch.journal.errors import TransactionNotFound
from switch.journal.ids import new_txn
from switch.journal.models import Direction, EventDraft, NewTransaction, Transaction
from switch.journal.refusals import DuplicateIdempotencyKey

log = structlog.get_logger("kswitch.payments")
RISK_DECLINED = "risk_declined"
STILL_IN_PROGRESS = ("the earlier request with this idempotency_key is still in progress; send it again shortly "
                     "to learn its outcome")

def request_hash(req: AuthorizeRequest, pan_hash: bytes) -> bytes:
    """What makes two requests 'the same' for idempotency; the PAN or account only as its keyed hash."""
    instrument = req.instrument
    parts: list[object] = [req.merchant_id, req.store_id, req.order_id, req.amount, req.currency.alpha, req.capture,
                           pan_hash.hex()]
    parts += [instrument.expiry if isinstance(instrument, CardInstrument) else None, req.bank]
    if isinstance(instrument, BankAccountInstrument):
        parts += [instrument.kind, instrument.bank, instrument.account_type, instrument.holder_id]
    elif not isinstance(instrument, CardInstrument):
        parts += [instrument.kind]
    canonical = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


class PaymentService:
    """Implements `switch.gateway.service.IPaymentService` over the journal and the connectors."""

    def __init__(
        self,
        clock: IReactorTime,
        journal: Journal,
        banks: Mapping[str, Bank],
        router: Router,
        merchants: Mapping[str, MerchantConfig],
        saf: StoreAndForward,
        registry: CollectorRegistry,
        void_after_capture: Mapping[str, bool] | None = None,
        engine: Engine | None = None,
        confirmations: Confirmations | None = None,
        risk: RiskStage | None = None,
    ) -> None:
        self.clock = clock
        self.saf = saf
        self.journal = journal
        self.banks = banks
        self.router = router
        self.merchants = merchants
        self.metrics = PaymentMetrics.on(registry)
        self.engine = engine or Engine(clock, journal, banks, saf)
        self.keyed = KeyedOnce(self.metrics.replays.inc)
        self.lifecycle = Lifecycle(self.engine, self.metrics, self.keyed, banks, merchants, void_after_capture or {})
        self.confirmations = confirmations
        self.risk = risk
        self.outcomes = PaymentOutcomes(self.engine, journal, saf, self.metrics, confirmations, risk)
        self._payments: dict[str, type[InFlightPayment]] = {}  # by bank name: `payments_to`

    def plugin(self, bank: Bank) -> ConnectorPlugin:
        """The bank's plugin, or the no-op base behaviour for a bank without one."""
        return self.engine.plugin(bank)

    # -- authorize ------------------------------------------------------------------

    def authorize_to(self, request: AuthorizeRequest, client: str, answer_to: Answerable[dict[str, Any]]) -> None:
        """Tell ``answer_to`` the payment's final answer (`switch.gateway.service.IPaymentService`).

        Not a coroutine, nor is anything that waits on the bank: a payment written to its bank is one
        `InFlightPayment` (see `switch.engine.inflight`), which tells ``answer_to`` itself, or the idempotency
        key's `KeyedOnce` entry in between: no Deferred is kept for the wait."""
        if request.idempotency_key is None:  # the request hash only serves a key's replays
            try:
                self._authorize_once(request, None, answer_to)
            except Exception:  # refused while routing: nothing journalled
                answer_to.errback(Failure())
            return
        try:
            pan_hash = self.journal.vault.pan_hash(sealed_instrument(request.instrument).pan)
            h = request_hash(request, pan_hash)
        except Exception:
            answer_to.errback(Failure())
            return
        self.keyed.run_to((request.merchant_id, request.idempotency_key), h,
                          lambda first: self._first_with_key(request, h, pan_hash, first), answer_to)

    def authorize(self, request: AuthorizeRequest, client: str) -> Deferred[dict[str, Any]]:
        """`authorize_to` for a caller that wants a Deferred."""
        answered: Deferred[dict[str, Any]] = Deferred()
        self.authorize_to(request, client, answered)
        return answered

    def _first_with_key(self, req: AuthorizeRequest, h: bytes, pan_hash: bytes,
                        answered: Answerable[dict[str, Any]]) -> None:
        assert req.idempotency_key is not None
        found = self.journal.find_by_idempotency_key(req.merchant_id, req.idempotency_key)
        found.addCallback(self._unless_journalled, req, h, pan_hash, answered).addErrback(answered.errback)

    def _unless_journalled(self, earlier: Transaction | None, req: AuthorizeRequest, h: bytes, pan_hash: bytes,
                           answered: Answerable[dict[str, Any]]) -> None:
        if earlier is None:
            self._authorize_once(req, h, answered, pan_hash)
            return
        check_same(earlier.request_hash, h)
        _tell(ensureDeferred(self._replay(earlier)), answered)

    async def _replay(self, earlier: Transaction) -> dict[str, Any]:
        if earlier.parent_txn_id is not None:  # the key names an operation: never the same request
            check_same(None, b"")
        if API_STATUS[earlier.status] == "pending":  # in flight on another node, or being ended here
            raise Busy(STILL_IN_PROGRESS)
        self.metrics.replays.inc()
        return await self._answer(earlier)

    def _candidates(self, req: AuthorizeRequest) -> tuple[str, ...]:
        if req.bank is not None:
            if req.bank not in self.banks:
                raise InvalidRequest(f"unknown bank {req.bank!r}; expected one of {sorted(self.banks)}", field="bank")
            if not self._can_carry(req.bank, req):
                raise InvalidRequest(f"bank {req.bank!r} does not take {req.instrument.kind} payments "
                                     "(its dialect does not mask field 102)", field="bank")
            return (req.bank,)
        decision = self.router.route(route_query(req))
        return tuple(c for c in decision.connectors if self._can_carry(c, req))

    def _can_carry(self, connector: str, req: AuthorizeRequest) -> bool:
        return isinstance(req.instrument, CardInstrument) or carries_accounts(self.banks[connector].profile.dialect)

    def _authorize_once(self, req: AuthorizeRequest, h: bytes | None, answered: Answerable[dict[str, Any]],
                        pan_hash: bytes | None = None) -> None:
        """Route, then start the payment that tells ``answered`` (raises at once if refused while routing);
        ``pan_hash``: the card's keyed hash when the request hash needed it already (computed once)."""
        merchant = self.merchants[req.merchant_id]
        store = merchant.stores[req.store_id]
        kind = Kind.SALE if req.capture else Kind.AUTHORIZATION
        candidates = self._candidates(req)
        ready = [self.banks[c] for c in candidates if self.banks[c].ready]
        bank = next((b for b in ready if not b.saturated), None)
        if bank is None and ready:
            raise Busy(f"bank {ready[0].name} has too many payments in flight; retry shortly")
        if bank is None:
            reason = "no_route" if not candidates else "issuer_unavailable"
            _tell(ensureDeferred(self._refused(req, h, kind, candidates[0] if candidates else "unrouted", reason)),
                  answered)
            return
        bank.active += 1  # given back when the payment is answered (`_answered_early`, `InFlightPayment`)
        ensureDeferred(self._send(req, h, kind, bank, merchant, store, answered, pan_hash)).addCallbacks(
            self._answered_early, self._not_sent, callbackArgs=(bank, answered), errbackArgs=(bank, h, answered))

    @staticmethod
    def _answered_early(result: dict[str, Any] | None, bank: Bank, answered: Answerable[dict[str, Any]]) -> None:
        """`_send` ended before the bank was asked (risk block, not encodable), or handed ``answered``
        to its `InFlightPayment` (None)."""
        if result is not None:
            bank.active -= 1
            answered.callback(result)

    def _not_sent(self, failure: Failure, bank: Bank, h: bytes | None, answered: Answerable[dict[str, Any]]) -> None:
        bank.active -= 1
        e = failure.value
        if not isinstance(e, DuplicateIdempotencyKey) or h is None:
            answered.errback(failure)
            return
        try:  # another switch node took the key a moment ago
            check_same(e.transaction.request_hash if e.same_request else None, h)
        except IdempotencyConflict:
            answered.errback(Failure())
            return
        _tell(ensureDeferred(self._replay(e.transaction)), answered)

    def _build(self, req: AuthorizeRequest, bank: Bank, merchant: MerchantConfig, store: StoreConfig, stan: str,
               rrn: str, step_up: bool) -> Message:
        return self.plugin(bank).request(
            financial_request(
                bank.profile, "financial" if req.capture else "authorization", "00", req.amount,
                req.currency.numeric, req.instrument, Acceptor.of(merchant, store), stan, rrn, self.clock.seconds(),
            ),
            PaymentContext(req.instrument, merchant.name, req.order_id, step_up=step_up),
        )

    async def _send(
        self, req: AuthorizeRequest, h: bytes | None, kind: Kind, bank: Bank, merchant: MerchantConfig,
        store: StoreConfig, answered: Answerable[dict[str, Any]], pan_hash: bytes | None,
    ) -> dict[str, Any] | None:
        """Journal the request and hand it to the bank; None once an `InFlightPayment` owns ``answered``.

        The risk stage (`switch.engine.risk`) screens the payment inside its own commits (`Screening`):
        it decides in the commit that journals the request (a block journals the payment declined and
        sends nothing; a step-up asks the bank to have the customer confirm it, which only a connector
        whose plugin can ask and that waits for customers is offered) and learns the outcome in the
        commit that journals it (declines feed card-testing rules, failures give limits back)."""
        txn_id, txn_number = new_txn()
        screening = None
        if self.risk is not None and self.risk.rules.rules:  # no rules: no stage, nothing journalled for it
            step_up = self.plugin(bank).step_up and self.confirmations is not None
            screening = self.risk.screening(txn_id, req, step_up, pan_hash)
            pan_hash = screening.facts.pan_hash
        stan = bank.reserve_stan()
        try:
            message = self._build(req, bank, merchant, store, stan, bank.next_rrn(),
                                  screening is not None and screening.step_up)
        except BaseException:
            bank.release_stan(stan)
            raise
        try:
            encoded = self.engine.check_encodes(bank, message)
        except NotEncodable:
            return await self._refused(req, h, kind, bank.name, NOT_ENCODABLE)
        try:
            if screening is None:
                await self._journal_request(req, h, kind, bank, txn_id, message, pan_hash)
            else:
                refused, verdict = await self.journal.create_screened(  # the decision in the request's commit
                    self._new_transaction(req, h, kind, bank, txn_id, message, pan_hash),
                    (message["t"], mask_message(message, bank.profile.dialect)), screening.decide, RISK_DECLINED)
                screening.decided(txn_id, verdict)
                if verdict.journal_as == "refuse":
                    bank.release_stan(stan)
                    self.metrics.child(self.metrics.outcomes, bank.name, kind.value, "declined").inc()
                    return {**answer(refused), "risk": verdict.answer_field()}
                if verdict.journal_as == "apart":  # the verdict's step-up differs from the request built
                    message = self._build(req, bank, merchant, store, stan, message["37"],
                                          verdict.action == "step_up")
                    encoded = self.engine.check_encodes(bank, message)
                    await self._journal_request(req, h, kind, bank, txn_id, message, pan_hash)
        except BaseException as e:
            bank.release_stan(stan)
            if isinstance(e, NotRecorded):  # recorded or not, never sent: it is ended here, not left pending
                self.outcomes.fail_unrecorded(txn_id, kind, bank, req, screening.verdict if screening else None)
            raise
        payment = self._payments_to(bank)(txn_number, req, message, screening.verdict if screening else None, answered)
        self.engine.send_to(payment, bank, message, encoded=encoded)
        return None

    def _payments_to(self, bank: Bank) -> type[InFlightPayment]:
        payments = self._payments.get(bank.name)
        if payments is None or payments.bank is not bank:  # a bank object replaced: its own class
            payments = self._payments[bank.name] = payments_to(bank, self.outcomes)
        return payments

    async def _refused(self, req: AuthorizeRequest, h: bytes | None, kind: Kind, connector: str, reason: str) -> dict[str, Any]:
        txn = await self.journal.create_transaction(
            NewTransaction(
                kind=kind, merchant_id=req.merchant_id, store_id=req.store_id, order_id=req.order_id,
                connector=connector, amount=req.amount, currency=req.currency.alpha,
                card=sealed_instrument(req.instrument), retain_card=False,
                idempotency_key=req.idempotency_key, request_hash=h,
                status=Status.FAILED, reason=reason,
            )
        )
        self.metrics.child(self.metrics.outcomes, connector, kind.value, "failed").inc()
        return answer(txn)

    async def _journal_request(
        self, req: AuthorizeRequest, h: bytes | None, kind: Kind, bank: Bank, txn_id: str, message: Message,
        pan_hash: bytes | None,
    ) -> None:
        """Transaction row and outgoing message, committed in one database transaction before the
        bank sees anything: recovery always finds the request it must reverse."""
        await self.journal.create_transaction(self._new_transaction(req, h, kind, bank, txn_id, message, pan_hash),
                                              request=(message["t"], mask_message(message, bank.profile.dialect)))

    @staticmethod
    def _new_transaction(
        req: AuthorizeRequest, h: bytes | None, kind: Kind, bank: Bank, txn_id: str, message: Message,
        pan_hash: bytes | None = None,
    ) -> NewTransaction:
        return NewTransaction(
            txn_id=txn_id, kind=kind, merchant_id=req.merchant_id, store_id=req.store_id,
            order_id=req.order_id, connector=bank.name, amount=req.amount, currency=req.currency.alpha,
            card=sealed_instrument(req.instrument), retain_card=True,
            stan=message["11"], transmission_datetime=message["7"], rrn=message["37"],
            idempotency_key=req.idempotency_key, request_hash=h, pan_hash=pan_hash,
        )

    # -- queries --------------------------------------------------------------------

    def status(self, txn_id: str, merchant_ids: frozenset[str]) -> Deferred[dict[str, Any]]:
        return ensureDeferred(self._status(txn_id, merchant_ids))

    async def _status(self, txn_id: str, merchant_ids: frozenset[str]) -> dict[str, Any]:
        try:
            txn = await self.journal.get_transaction(txn_id)
        except TransactionNotFound:
            txn = None
        if txn is None or txn.merchant_id not in merchant_ids:
            raise NotFound(f"no transaction {txn_id!r} for your merchants", field="txn_id")
        return await self._answer(txn)

    def status_by_order(self, merchant_id: str, order_id: str) -> Deferred[dict[str, Any]]:
        return ensureDeferred(self._status_by_order(merchant_id, order_id))

    async def _status_by_order(self, merchant_id: str, order_id: str) -> dict[str, Any]:
        payments = [t for t in await self.journal.find_by_order(merchant_id, order_id) if t.parent_txn_id is None]
        if not payments:
            raise NotFound(f"no payment for order {order_id!r} of merchant {merchant_id!r}",
                           field="order_id")
        return await self._answer(max(payments, key=lambda t: t.created_at))

    async def _answer(self, txn: Transaction) -> dict[str, Any]:
        """`answer`, with the confirmation URL again while the payment waits for the customer
        (status and idempotent replays), read from the bank's journalled answer by its plugin."""
        if txn.parent_txn_id is None:
            txn, operations = await self.journal.with_operations(txn.txn_id)
            result = {**answer(txn), "operations": [operation_view(child) for child in operations],
                      "fees": net_fees(txn, operations)}
        else:
            result = answer(txn)
        if self.risk is not None and txn.parent_txn_id is None:
            decision = await self.journal.risk_decision(txn.txn_id)
            if decision is not None:
                result["risk"] = decision
        bank = self.banks.get(txn.connector)
        if txn.status is not Status.AWAITING_CUSTOMER or bank is None:
            return result
        plugin = self.plugin(bank)
        for message in await self.journal.messages(txn.txn_id):
            if message.direction is not Direction.IN:
                continue
            url = plugin.confirmation_url({**message.fields, "t": message.mti})
            if url is not None:
                return {**result, "confirmation_url": url}
        return result

    def lifecycle_op(self, request: LifecycleRequest, merchant_ids: frozenset[str]) -> Deferred[dict[str, Any]]:
        """capture, void or refund of one of ``merchant_ids``' transactions (see `switch.engine.lifecycle`)."""
        return ensureDeferred(self.lifecycle.run(request, merchant_ids))

    def late_response(self, bank: Bank, message: Message) -> Deferred[None]:
        """An answer after its request gave up: journal it and tell the web tier.

        A late approval does not cancel the queued reversal: the web tier was told
        ``timeout`` and the shop acted on that, so the money must go back.
        """
        return ensureDeferred(self._late_response(bank, message)).addErrback(
            lambda f: log.error("late_response_not_journalled", connector=bank.name, error=f.getErrorMessage())
        )

    async def _late_response(self, bank: Bank, message: Message) -> None:
        txn = await match_late(self.journal, bank, message)
        if txn is None:
            return
        await self.journal.append_message(
            txn_id=txn.txn_id, direction=Direction.IN, connector=bank.name, mti=message["t"],
            fields=mask_message(message, bank.profile.dialect),
        )
        code = message.get("39")
        await self.journal.append_event(txn.merchant_id, EventDraft("payment.late_response", {
            "txn_id": txn.txn_id, "response_code": code, "approved": bank.profile.responses.is_approved(code),
            "status": API_STATUS[txn.status],
        }), txn_id=txn.txn_id)
        log.warning("late_response", txn_id=txn.txn_id, connector=bank.name, response_code=code, status=txn.status.value)

    def answer_undeliverable(self, txn_id: str, client: str) -> None:
        """The shop never learnt this outcome. An approval it cannot replay (no idempotency key) is
        reversed, as acquirers do; with a key the web tier can still ask again, so it stands."""
        log.warning("answer_undeliverable", txn_id=txn_id, client=client)
        ensureDeferred(self._undeliverable(txn_id)).addErrback(
            lambda f: log.error("undeliverable_reversal_failed", txn_id=txn_id, error=f.getErrorMessage())
        )

    async def _undeliverable(self, txn_id: str) -> None:
        txn = await self.journal.get_transaction(txn_id)
        if txn.status is Status.APPROVED and txn.idempotency_key is None:
            await self.lifecycle.run(LifecycleRequest("void", txn_id), frozenset({txn.merchant_id}))
            log.warning("undeliverable_approval_reversed", txn_id=txn_id, connector=txn.connector)


def route_query(req: AuthorizeRequest) -> RouteQuery:
    """What the router sees: BIN and scheme of a card; the chosen bank code of a bank account;
    the provider of a wallet (matched by a rule's ``banks``)."""
    instrument = req.instrument
    common = dict(instrument=instrument.kind, amount=req.amount, currency=req.currency.alpha,
                  merchant_id=req.merchant_id)
    if isinstance(instrument, CardInstrument):
        return RouteQuery(**common, bin8=instrument.pan[:8], scheme=instrument.scheme)
    bank = instrument.bank if isinstance(instrument, BankAccountInstrument) else instrument.provider
    return RouteQuery(**common, bank=bank)



def _tell(outcome: Deferred[dict[str, Any]], answer_to: Answerable[dict[str, Any]]) -> None:
    """Tell ``answer_to`` how an answer made as a Deferred ended (`Deferred.chainDeferred` for any target)."""
    outcome.addCallbacks(answer_to.callback, answer_to.errback)
