"""What happens to a payment after its authorization: capture, void, refund.

Each is an *operation*: a child transaction of the payment that reserves what it needs on
its parent before any message is sent (`Journal.begin_operation`), and whose outcome is
journalled together with the parent's totals and status (`Journal.finish_operation`):

* capture: an ``approved`` pre-authorization, once, for at most the authorized amount;
  a completion advice 0220 that is repeated (0221) until acknowledged if its answer is lost;
* refund: of a captured payment (an approved sale, ``captured``, ``partially_refunded``),
  never more than captured minus refunded minus refunds in flight; an 0200 with processing
  code 20, reversed through store-and-forward if its answer is lost;
* void: an ``approved`` authorization or sale (after capture only where the connector
  allows it): the parent waits in ``reversal_pending`` while store-and-forward delivers
  the reversal.

Concurrent or retried requests therefore can never exceed what was authorized or
captured: the journal refuses the reservation and the web tier gets ``invalid_request``
or ``invalid_state`` before anything is sent.  ``idempotency_key`` has authorize's
semantics (same key and request: the first answer, even while in flight; another
request: ``idempotency_conflict``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog
from twisted.internet.defer import CancelledError, ensureDeferred

from switch.domain.errors import DomainError, InvalidRequest, InvalidState, NotFound, NotRecorded
from switch.domain.merchant import MerchantConfig
from switch.domain.model import LifecycleRequest
from switch.domain.status import Kind, Status
from switch.engine.bank import Bank
from switch.engine.engine import (
    NOT_ENCODABLE,
    Answered,
    Engine,
    NotEncodable,
    NotSent,
    PaymentMetrics,
    answer_columns,
    journalled_request,
    operation_view,
    resolution_draft,
    settlement_column,
    void_draft,
)
from switch.engine.idempotency import KeyedOnce, check_same
from switch.engine.inflight import JOURNAL_UNAVAILABLE
from switch.engine.recommit import commit_outcome, end_unrecorded
from switch.engine.status import API_STATUS, answer
from switch.iso.dialect import Message
from switch.iso.masking import mask_message
from switch.iso.translate import (
    Acceptor,
    financial_request,
    instrument_from_sealed,
    original_data_elements,
    reversal_request,
)
from switch.journal.errors import TransactionNotFound
from switch.journal.ids import new_txn_id
from switch.journal.models import NewTransaction, SafKind, Transaction
from switch.journal.refusals import DuplicateIdempotencyKey, ReservationRefused

log = structlog.get_logger("kswitch.lifecycle")

REFUNDABLE = (Status.CAPTURED, Status.PARTIALLY_REFUNDED)


def operation_hash(req: LifecycleRequest) -> bytes:
    """What makes two operation requests 'the same' for idempotency."""
    canonical = json.dumps([req.op, req.txn_id, req.amount], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


class Lifecycle:
    def __init__(
        self,
        engine: Engine,
        metrics: PaymentMetrics,
        keyed: KeyedOnce,
        banks: Mapping[str, Bank],
        merchants: Mapping[str, MerchantConfig],
        void_after_capture: Mapping[str, bool],
    ) -> None:
        self.engine = engine
        self.journal = engine.journal
        self.metrics = metrics
        self.keyed = keyed
        self.banks = banks
        self.merchants = merchants
        self.void_after_capture = void_after_capture

    async def run(self, req: LifecycleRequest, merchant_ids: frozenset[str]) -> dict[str, Any]:
        parent = await self._original(req.txn_id, merchant_ids)
        if req.idempotency_key is None:
            return await self._once(parent, req)
        return await self.keyed.run(
            (parent.merchant_id, req.idempotency_key), operation_hash(req),
            lambda: self._first_with_key(parent, req),
        )

    async def _first_with_key(self, parent: Transaction, req: LifecycleRequest) -> dict[str, Any]:
        assert req.idempotency_key is not None
        earlier = await self.journal.find_by_idempotency_key(parent.merchant_id, req.idempotency_key)
        if earlier is not None:
            check_same(earlier.request_hash, operation_hash(req))
            return await self.replay(earlier)
        try:
            return await self._once(parent, req)
        except DuplicateIdempotencyKey as e:
            check_same(e.transaction.request_hash if e.same_request else None, operation_hash(req))
            return await self.replay(e.transaction)

    async def replay(self, child: Transaction) -> dict[str, Any]:
        """The answer an operation gave (or gives now, while it is resolved), from the journal."""
        self.metrics.replays.inc()
        assert child.parent_txn_id is not None
        parent = await self.journal.get_transaction(child.parent_txn_id)
        return _operation_answer(parent, child)

    async def _once(self, parent: Transaction, req: LifecycleRequest) -> dict[str, Any]:
        allowed = self._allowed(parent, req)
        if req.op == "void":
            return await self._void(parent, req, allowed)
        kind = Kind.CAPTURE if req.op == "capture" else Kind.REFUND
        return await self._money(parent, req, kind, allowed)

    async def _original(self, txn_id: str, merchant_ids: frozenset[str]) -> Transaction:
        try:
            txn = await self.journal.get_transaction(txn_id)
        except TransactionNotFound:
            txn = None
        if txn is None or txn.merchant_id not in merchant_ids:
            raise NotFound(f"no transaction {txn_id!r} for your merchants", field="txn_id")
        return txn

    # -- what is allowed (checked here for a precise answer; enforced by the journal) ----------

    def _allowed(self, parent: Transaction, req: LifecycleRequest) -> tuple[Status, ...]:
        """The parent statuses the operation may start from; raises the answer if it may not start now."""
        if parent.parent_txn_id is not None:
            raise _refused(parent, req.op, "a payment (this is an operation on one)")
        if req.op == "capture":
            if parent.kind is not Kind.AUTHORIZATION or parent.status is not Status.APPROVED:
                raise _refused(parent, "capture", "an approved pre-authorization (capture: false)")
            if parent.amount_capture_pending:
                raise InvalidState("a capture of this pre-authorization is still being resolved; "
                                   "ask status", field="txn_id")
            amount = req.amount if req.amount is not None else parent.amount_authorized
            if amount > parent.amount_authorized:
                raise InvalidRequest(f"capture amount {amount} exceeds the authorized "
                                     f"{parent.amount_authorized}", field="amount")
            return (Status.APPROVED,)
        if req.op == "refund":
            if parent.status not in REFUNDABLE and not (parent.kind is Kind.SALE and parent.status is Status.APPROVED):
                raise _refused(parent, "refund", "a captured sale or a captured pre-authorization")
            remaining = parent.amount_captured - parent.amount_refunded - parent.amount_refund_pending
            amount = req.amount if req.amount is not None else remaining
            if amount > remaining or amount <= 0:
                in_flight = f", {parent.amount_refund_pending} in refunds still being resolved" \
                    if parent.amount_refund_pending else ""
                raise InvalidRequest(f"refund amount {amount} exceeds what is left to refund "
                                     f"({remaining} of {parent.amount_captured} captured{in_flight})", field="amount")
            return (*REFUNDABLE, Status.APPROVED)
        allowed = [Status.APPROVED]
        if self.void_after_capture.get(parent.connector, False):
            allowed.append(Status.CAPTURED)
        if parent.status not in allowed:
            what = "an approved authorization or sale" + (" or a captured one" if len(allowed) > 1 else
                                                           " not yet captured (this connector does not allow "
                                                           "voids after capture; refund instead)")
            raise _refused(parent, "void", what)
        if parent.amount_capture_pending or parent.amount_refund_pending or parent.amount_refunded:
            raise InvalidState("cannot void a payment with a capture or refund in progress or done; "
                               "refund instead", field="txn_id")
        return tuple(allowed)

    def _amount(self, parent: Transaction, req: LifecycleRequest) -> int:
        if req.amount is not None:
            return req.amount
        if req.op == "capture":
            return parent.amount_authorized
        return parent.amount_captured - parent.amount_refunded - parent.amount_refund_pending

    async def _refusal(self, parent_id: str, req: LifecycleRequest) -> DomainError:
        """Why the journal refused the reservation, said as precisely as a fresh read allows."""
        try:
            self._allowed(await self.journal.get_transaction(parent_id), req)
        except DomainError as e:
            return e
        return InvalidState("another operation on this payment changed it meanwhile; ask status",
                            field="txn_id")

    # -- capture and refund -------------------------------------------------------------

    async def _money(
        self, parent: Transaction, req: LifecycleRequest, kind: Kind, allowed: tuple[Status, ...]
    ) -> dict[str, Any]:
        bank = self.banks[parent.connector]
        if parent.card is None:
            raise InvalidState("the card of this transaction is no longer kept", field="txn_id")
        card = self.journal.reveal_card(parent.card)
        sent = await journalled_request(self.journal, parent)
        amount = self._amount(parent, req)
        message = self._message(bank, parent, sent, kind, amount, card)
        new = NewTransaction(
            txn_id=new_txn_id(), kind=kind, parent_txn_id=parent.txn_id, merchant_id=parent.merchant_id,
            store_id=parent.store_id, order_id=parent.order_id, connector=bank.name, amount=amount,
            currency=parent.currency, card=card, retain_card=True, stan=message["11"],
            transmission_datetime=message["7"], rrn=message.get("37"), idempotency_key=req.idempotency_key,
            request_hash=operation_hash(req) if req.idempotency_key else None,
        )
        try:
            self.engine.check_encodes(bank, message)
        except NotEncodable:
            child = await self.journal.create_transaction(
                replace(new, status=Status.FAILED, reason=NOT_ENCODABLE, retain_card=False, stan=None))
            return _operation_answer(parent, child)
        try:
            parent, child = await self.journal.begin_operation(
                parent.txn_id, new, allowed=allowed,
                request=(message["t"], mask_message(message, bank.profile.dialect)))
        except ReservationRefused as e:
            bank.release_stan(message["11"])
            raise await self._refusal(e.parent.txn_id, req) from None
        except BaseException as e:
            bank.release_stan(message["11"])
            if isinstance(e, NotRecorded):  # recorded or not, never sent: ended here, not left pending
                ensureDeferred(self._fail_unrecorded(new.txn_id))
            raise
        parent, child = await self._outcome(bank, child, message, card)
        self.metrics.outcomes.labels(bank.name, kind.value, operation_view(child)["status"]).inc()
        return _operation_answer(parent, child)

    def _message(self, bank: Any, parent: Transaction, sent: Message, kind: Kind, amount: int, card: Any) -> Message:
        merchant = self.merchants[parent.merchant_id]
        store = merchant.stores[parent.store_id or ""]
        acceptor = Acceptor.of(merchant, store)
        capture = kind is Kind.CAPTURE
        stan = bank.reserve_stan()
        try:
            message = financial_request(
                bank.profile, "financial_advice" if capture else "financial", "00" if capture else "20", amount,
                sent["49"], instrument_from_sealed(card, sent), acceptor, stan,
                sent.get("37") if capture else bank.next_rrn(), self.engine.clock.seconds(),
            )
            plugin = self.engine.plugin(bank)
            if not capture:
                return plugin.refund(message, sent)
            message[bank.profile.dialect.original_data_field] = original_data_elements(sent, bank.profile)
            if parent.auth_code:
                message["38"] = parent.auth_code
            return plugin.completion(message, sent)
        except BaseException:
            bank.release_stan(stan)
            raise

    async def _outcome(
        self, bank: Any, child: Transaction, message: Message, card: Any
    ) -> tuple[Transaction, Transaction]:
        """Send the journalled operation and journal its outcome with the parent's totals."""
        outcome, received = await self.engine.exchange(child.txn_id, bank, message)

        async def finish(txn_id: str, **result: Any) -> tuple[Transaction, Transaction]:
            """The outcome with the answer in its commit, committed again while the journal cannot say."""
            return await commit_outcome(
                self.engine.clock, self.journal, txn_id,
                lambda: self.journal.finish_operation(txn_id, received=received, **result), self._with_parent)

        if isinstance(outcome, NotSent):
            return await finish(child.txn_id, to=Status.FAILED, reason=outcome.reason, forget_card=True)
        if isinstance(outcome, Answered):
            a = outcome.answer
            status = {"approved": Status.APPROVED, "declined": Status.DECLINED}.get(a.status, Status.FAILED)
            return await finish(child.txn_id, to=status, reason=a.reason, forget_card=True,
                                **answer_columns(a, message.get("37")), **settlement_column(self.journal, bank.name, a))
        # Uncertain (no answer, or one the plugin does not believe): the reservation stays until
        # the repeat or reversal settles it; the operation answers "pending" meanwhile.
        draft = resolution_draft(bank, message, card)
        a = outcome.answer
        codes = {} if a is None else answer_columns(a, message.get("37"))
        result = await finish(child.txn_id, to=Status.TIMEOUT, reason=outcome.cause, saf=draft, **codes)
        if draft.kind is SafKind.REVERSAL:
            self.metrics.reversals_queued.labels(bank.name, outcome.cause).inc()
        log.warning("operation_uncertain", txn_id=child.txn_id, kind=child.kind.value, cause=outcome.cause,
                    resolution=draft.kind.value)
        self.engine.saf.kick(bank.name)
        return result

    async def _fail_unrecorded(self, txn_id: str) -> None:
        """End an operation whose first commit the journal could not confirm (`NotRecorded`: its writer process died
        with the batch) and that was therefore never written to its bank: if that commit happened, the operation is
        ``failed`` (``journal_unavailable``) and its reservation on the parent given back in the same commit,
        committed again while the journal cannot say (`switch.engine.recommit`). Left pending, it held the parent's
        amount until the stale-pending sweep (found by the chaos test: a capture answered ``busy``)."""
        await end_unrecorded("operation", lambda: commit_outcome(
            self.engine.clock, self.journal, txn_id,
            lambda: self.journal.finish_operation(txn_id, to=Status.FAILED, reason=JOURNAL_UNAVAILABLE, forget_card=True),
            self._with_parent), txn_id=txn_id)

    async def _with_parent(self, child: Transaction) -> tuple[Transaction, Transaction]:
        assert child.parent_txn_id is not None
        return await self.journal.get_transaction(child.parent_txn_id), child

    # -- void ---------------------------------------------------------------------------

    async def _void(self, parent: Transaction, req: LifecycleRequest, allowed: tuple[Status, ...]) -> dict[str, Any]:
        bank = self.banks[parent.connector]
        sent = await journalled_request(self.journal, parent)
        card = self.journal.reveal_card(parent.card) if parent.card is not None else None
        probe = reversal_request(sent, bank.profile, bank.reserve_stan(), self.engine.clock.seconds(), repeat=False)
        new = NewTransaction(
            txn_id=new_txn_id(), kind=Kind.VOID, parent_txn_id=parent.txn_id, merchant_id=parent.merchant_id,
            store_id=parent.store_id, order_id=parent.order_id, connector=bank.name, amount=parent.amount,
            currency=parent.currency, idempotency_key=req.idempotency_key,
            request_hash=operation_hash(req) if req.idempotency_key else None,
        )
        try:
            self.engine.check_encodes(bank, self.engine.plugin(bank).reversal_message(probe, sent))
        except NotEncodable:
            child = await self.journal.create_transaction(replace(new, status=Status.FAILED, reason=NOT_ENCODABLE))
            return _operation_answer(parent, child)
        bank.release_stan(probe["11"])
        try:
            parent, child = await self.journal.begin_operation(parent.txn_id, new, allowed=allowed,
                                                               saf=void_draft(bank, sent, card))
        except ReservationRefused as e:
            raise await self._refusal(e.parent.txn_id, req) from None
        done = self.engine.completion(child.txn_id)
        self.engine.saf.kick(bank.name)
        timer = self.engine.clock.callLater(bank.connector.options.request_timeout, done.cancel)
        try:
            child = await done
        except CancelledError:
            log.info("void_queued", txn_id=parent.txn_id, operation=child.txn_id, connector=bank.name)
            return {**_operation_answer(parent, child), "reason": "void_queued"}
        finally:
            if timer.active():
                timer.cancel()
        return _operation_answer(await self.journal.get_transaction(parent.txn_id), child)


def _operation_answer(parent: Transaction, child: Transaction) -> dict[str, Any]:
    return {**answer(parent), "operation": operation_view(child)}


def _refused(original: Transaction, op: str, expected: str) -> DomainError:
    return InvalidState(
        f"cannot {op} a {original.kind.value} that is {API_STATUS[original.status]}; expected {expected}",
        field="txn_id",
    )
