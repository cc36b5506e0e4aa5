"""What happens to a payment after its authorization: capture, void, refund.

Each operation is a guarded state transition of the original transaction:

* capture: a pre-authorization (``approved``, kind authorization) becomes ``captured``
  by a completion advice (0220) for at most the authorized amount (partial capture
  allowed, once);
* void: an ``approved`` authorization or sale is reversed through store-and-forward
  (so a void survives link loss and restarts); after capture only when the
  connector allows it;
* refund: a ``captured`` (or already partially refunded) payment is credited back by
  an 0200 with processing code 20, never more than was captured in total.

Operations on one payment are serialised in this process, and the final transition is
compare-and-set on the row's version, so two refunds racing on two switch nodes cannot
both pass the "not more than captured" check unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from twisted.internet.defer import DeferredLock

from switch.api.errors import ApiError
from switch.dialect import Message
from switch.journal import Journal
from switch.journal.errors import TransactionNotFound
from switch.journal.ids import new_txn_id
from switch.journal.models import (
    Direction,
    Kind,
    NewTransaction,
    SafDraft,
    SafKind,
    Status,
    Transaction,
)
from switch.masking import mask_message
from switch.mti import mti_for
from switch.mux import MuxError
from switch.responses import BankAnswer
from switch.status import API_STATUS, answer
from switch.translate import (
    Acceptor,
    financial_request,
    instrument_from_sealed,
    original_data_elements,
    restore_instrument,
    reversal_template,
)

if TYPE_CHECKING:
    from switch.payments import PaymentService

log = structlog.get_logger("kswitch.lifecycle")

INVALID_STATE = "invalid_state"


@dataclass(frozen=True)
class LifecycleRequest:
    """capture / void / refund of ``txn_id``; ``amount`` None means the whole remaining amount."""

    op: str
    txn_id: str
    amount: int | None = None

    def log_fields(self) -> dict[str, object]:
        return {"txn_id": self.txn_id, "amount": self.amount}


async def journalled_request(journal: Journal, txn: Transaction) -> Message:
    """The original request as sent (masked in the journal), with the sealed card or account put back."""
    messages = await journal.messages(txn.txn_id)
    sent = next((m for m in messages if m.direction is Direction.OUT and m.mti[2] in "02"), None)
    if sent is None:
        raise LookupError(f"transaction {txn.txn_id} has no journalled request")
    original: Message = {**sent.fields, "t": sent.mti}
    if txn.card is not None:
        restore_instrument(original, journal.reveal_card(txn.card))
    return original


class Lifecycle:
    def __init__(self, service: PaymentService, void_after_capture: Mapping[str, bool]) -> None:
        self.service = service
        self.void_after_capture = void_after_capture
        self._locks: dict[str, DeferredLock] = {}

    async def run(self, req: LifecycleRequest, merchant_ids: frozenset[str]) -> dict[str, Any]:
        lock = self._locks.setdefault(req.txn_id, DeferredLock())
        await lock.acquire()
        try:
            original = await self._original(req.txn_id, merchant_ids)
            handler = {"capture": self._capture, "void": self._void, "refund": self._refund}[req.op]
            return await handler(original, req)
        finally:
            lock.release()
            if not lock.waiting:
                self._locks.pop(req.txn_id, None)

    async def _original(self, txn_id: str, merchant_ids: frozenset[str]) -> Transaction:
        try:
            txn = await self.service.journal.get_transaction(txn_id)
        except TransactionNotFound:
            txn = None
        if txn is None or txn.merchant_id not in merchant_ids:
            raise ApiError("not_found", f"no transaction {txn_id!r} for your merchants", field="txn_id")
        return txn

    # -- capture ------------------------------------------------------------------------

    async def _capture(self, original: Transaction, req: LifecycleRequest) -> dict[str, Any]:
        if original.kind is not Kind.AUTHORIZATION or original.status is not Status.APPROVED:
            raise _refused(original, "capture", "an approved pre-authorization (capture: false)")
        amount = req.amount if req.amount is not None else original.amount_authorized
        if amount > original.amount_authorized:
            raise ApiError("invalid_request", f"capture amount {amount} exceeds the authorized "
                           f"{original.amount_authorized}", field="amount")
        bank, request, child_id = await self._child_request(original, "financial_advice", "00", amount, Kind.CAPTURE)
        read = await self._exchange(bank, original, child_id, Kind.CAPTURE, request, amount)
        if read is None or read.status != "approved":
            return await self._operationanswer(original, child_id)
        updated = await self.service.journal.transition(
            original.txn_id, expected_from=(Status.APPROVED,), to=Status.CAPTURED,
            expected_version=original.version, amount_captured=amount,
        )
        return await self._operationanswer(updated, child_id)

    # -- refund -------------------------------------------------------------------------

    async def _refund(self, original: Transaction, req: LifecycleRequest) -> dict[str, Any]:
        refundable = (Status.CAPTURED, Status.PARTIALLY_REFUNDED)
        if original.status not in refundable and not (original.kind is Kind.SALE and original.status is Status.APPROVED):
            raise _refused(original, "refund", "a captured sale or a captured pre-authorization")
        remaining = original.amount_captured - original.amount_refunded
        amount = req.amount if req.amount is not None else remaining
        if amount > remaining:
            raise ApiError("invalid_request", f"refund amount {amount} exceeds what is left to refund ({remaining} "
                           f"of {original.amount_captured} captured)", field="amount")
        bank, request, child_id = await self._child_request(original, "financial", "20", amount, Kind.REFUND)
        read = await self._exchange(bank, original, child_id, Kind.REFUND, request, amount)
        if read is None or read.status != "approved":
            return await self._operationanswer(original, child_id)
        refunded = original.amount_refunded + amount
        updated = await self.service.journal.transition(
            original.txn_id, expected_from=(original.status,),
            to=Status.REFUNDED if refunded == original.amount_captured else Status.PARTIALLY_REFUNDED,
            expected_version=original.version, amount_refunded=refunded,
        )
        return await self._operationanswer(updated, child_id)

    # -- void ---------------------------------------------------------------------------

    async def _void(self, original: Transaction, req: LifecycleRequest) -> dict[str, Any]:
        allowed = [Status.APPROVED]
        if self.void_after_capture.get(original.connector, False):
            allowed.append(Status.CAPTURED)
        if original.status not in allowed:
            what = "an approved authorization or sale" + (" or a captured one" if len(allowed) > 1 else
                                                           " not yet captured (this connector does not allow "
                                                           "voids after capture; refund instead)")
            raise _refused(original, "void", what)
        bank = self.service.banks[original.connector]
        sent = await self._sent(original)
        card = self.service.journal.reveal_card(original.card) if original.card is not None else None
        saf = SafDraft(
            connector=bank.name, kind=SafKind.VOID, mti=mti_for(bank.profile.reversal, bank.profile.version),
            fields=reversal_template(sent, bank.profile.dialect), card=card, max_attempts=bank.saf.max_attempts,
        )
        updated = await self.service.journal.transition(
            original.txn_id, expected_from=tuple(allowed), to=Status.REVERSAL_PENDING,
            expected_version=original.version, reason="void_requested", saf=saf,
        )
        done = self.service.saf.completion(original.txn_id)
        self.service.saf.kick(bank.name)
        timer = self.service.clock.callLater(bank.connector.options.request_timeout, done.cancel)
        try:
            updated = await done
        except Exception:
            log.info("void_queued", txn_id=original.txn_id, connector=bank.name)
            return {**answer(updated), "status": "pending", "reason": "void_queued"}
        finally:
            if timer.active():
                timer.cancel()
        return answer(updated)

    # -- shared ---------------------------------------------------------------------------

    async def _sent(self, original: Transaction) -> Message:
        return await journalled_request(self.service.journal, original)

    async def _child_request(
        self, original: Transaction, kind: str, processing: str, amount: int, child_kind: Kind
    ) -> tuple[Any, Message, str]:
        bank = self.service.banks[original.connector]
        if original.card is None:
            raise ApiError("invalid_state", "the card of this transaction is no longer kept", field="txn_id")
        card = self.service.journal.reveal_card(original.card)
        merchant = self.service.merchants[original.merchant_id]
        store = merchant.stores[original.store_id or ""]
        sent = await self._sent(original)
        acceptor = Acceptor(merchant.mcc, store.terminal_id, merchant.acquirer_merchant_id, merchant.name,
                            merchant.city, merchant.country)
        stan = bank.reserve_stan()
        try:
            request = financial_request(
                bank.profile, kind, processing, amount, sent["49"], instrument_from_sealed(card, sent),
                acceptor, stan, sent.get("37") if child_kind is Kind.CAPTURE else bank.next_rrn(),
                self.service.clock.seconds(),
            )
            plugin = self.service.plugin(bank)
            if child_kind is Kind.CAPTURE:
                if original.auth_code:
                    request["38"] = original.auth_code
                request[bank.profile.dialect.original_data_field] = original_data_elements(sent, bank.profile)
                request = plugin.completion(request, sent)
            else:
                request = plugin.refund(request, sent)
        except BaseException:
            bank.release_stan(stan)
            raise
        return bank, request, new_txn_id()

    async def _exchange(
        self, bank: Any, original: Transaction, child_id: str, kind: Kind, request: Message, amount: int
    ) -> BankAnswer | None:
        journal = self.service.journal
        card = journal.reveal_card(original.card) if original.card is not None else None
        try:
            await journal.create_transaction(
                NewTransaction(
                    txn_id=child_id, kind=kind, parent_txn_id=original.txn_id, merchant_id=original.merchant_id,
                    store_id=original.store_id, order_id=original.order_id, connector=bank.name, amount=amount,
                    currency=original.currency, card=card, retain_card=kind is Kind.REFUND,
                    stan=request["11"], transmission_datetime=request["7"], rrn=request.get("37"),
                ),
                request=(request["t"], mask_message(request, bank.profile.dialect)),
            )
        except BaseException:
            bank.release_stan(request["11"])
            raise
        try:
            response = await bank.request(request)
        except MuxError as e:
            if not e.written:
                await journal.transition(child_id, expected_from=(Status.PENDING,), to=Status.FAILED,
                                         reason="issuer_unavailable")
                return None
            saf = self._refund_reversal(bank, kind, request, card)
            await journal.transition(child_id, expected_from=(Status.PENDING,), to=Status.TIMEOUT,
                                     reason="issuer_timeout", saf=saf)
            if saf is not None:
                self.service.saf.kick(bank.name)
            return None
        journal.append_message(txn_id=child_id, direction=Direction.IN, connector=bank.name, mti=response["t"],
                               fields=mask_message(response, bank.profile.dialect))
        read = self.service.plugin(bank).read_response(request, response, bank.profile.responses)
        status = {"approved": Status.APPROVED, "declined": Status.DECLINED}.get(read.status, Status.FAILED)
        saf = self._refund_reversal(bank, kind, request, card) if read.uncertain else None
        await journal.transition(child_id, expected_from=(Status.PENDING,), to=status, reason=read.reason,
                                 response_code=read.response_code, rrn=read.rrn, auth_code=read.auth_code, saf=saf)
        if saf is not None:
            self.service.saf.kick(bank.name)
        return read

    def _refund_reversal(self, bank: Any, kind: Kind, request: Message, card: Any) -> SafDraft | None:
        """A refund request the bank may have credited is reversed; a completion advice is not (its
        repeat is the engine's business)."""
        if kind is not Kind.REFUND:
            return None
        return SafDraft(connector=bank.name, kind=SafKind.REVERSAL,
                        mti=mti_for(bank.profile.reversal, bank.profile.version),
                        fields=reversal_template(request, bank.profile.dialect), card=card,
                        max_attempts=bank.saf.max_attempts)

    async def _operationanswer(self, original: Transaction, child_id: str) -> dict[str, Any]:
        child = await self.service.journal.get_transaction(child_id)
        operation = {"txn_id": child.txn_id, "kind": child.kind.value, "status": _api_status(child.status),
                     "reason": child.reason, "response_code": child.response_code, "amount": child.amount,
                     "stan": child.stan, "rrn": child.rrn}
        return {**answer(original), "operation": operation}


def _refused(original: Transaction, op: str, expected: str) -> ApiError:
    return ApiError(
        INVALID_STATE,
        f"cannot {op} a {original.kind.value} that is {_api_status(original.status)}; expected {expected}",
        field="txn_id",
    )


def _api_status(status: Status) -> str:
    return API_STATUS[status]
