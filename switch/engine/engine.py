"""The transaction engine: the one path every message to a bank takes, and what an
uncertain outcome means for each message class.

Why it exists: the authorization had a careful durable path and every other message a
partial one of its own, so captures were neither repeated nor reversed, refunds could be
credited twice and queued reversals could not be built.  Every caller (authorize,
capture, void, refund, store-and-forward, recovery, the sweeper) now uses these pieces:

1. `Engine.check_encodes`: the message is encoded by the bank's dialect *before* it is
   journalled, so a message that cannot be carried fails cleanly (nothing journalled as
   sent, STAN released, no reversal);
2. the caller journals the operation and its outgoing message in one commit
   (`Journal.create_transaction` / `Journal.begin_operation`);
3. `Engine.exchange` sends it and classifies the result: `NotSent` (the bank never saw
   it: STAN released), `Uncertain` (written, no believable answer) or `Answered` (read
   by the connector plugin's ``read_response``), with the bank's answer masked (`received`);
4. the caller journals the outcome together with that answer and the parent's totals in one
   commit (`Journal.finish_operation`); an uncertain outcome queues `resolution_draft` in that
   same commit.

Uncertainty by message class (`resolution_draft`): a request that may have moved money
(0100/0200 authorization, sale, refund) is reversed through store-and-forward; an
advice (0220 completion) is repeated (0221) with its original STAN until acknowledged,
never reversed.  The whole outgoing message is kept (masked, card sealed), so every
queued item can be built.  The engine installs `build_saf` and `settle_saf` as
store-and-forward's hooks: settling an item finalizes its operation and the parent in
one commit.  `journalled_request` and `reversal_draft` rebuild what was sent from the
journal (for lifecycle operations, confirmations and recovery), and `PaymentMetrics`
counts the outcomes of payments and their operations alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from connectors.base import ConnectorPlugin
from switch.bank.mux import LinkLost, MuxBusy, NoLinkAvailable, RequestTimeout
from switch.domain.answering import Answerable
from switch.domain.businessday import nearest_date
from switch.domain.carddata import CardData
from switch.domain.status import Status
from switch.engine.bank import Bank
from switch.engine.saf import REVERSIBLE, StoreAndForward, acknowledged
from switch.engine.status import API_STATUS
from switch.iso.dialect import Message, MessageError
from switch.iso.masking import mask_message
from switch.iso.mti import mti_for
from switch.iso.responses import BankAnswer
from switch.iso.translate import restore_instrument, reversal_request
from switch.journal import Journal
from switch.journal.errors import TransitionRefused
from switch.journal.models import Direction, EventDraft, Received, SafDraft, SafItem, SafKind, Transaction
from switch.observe.metrics import Counter, MetricBundle

log = structlog.get_logger("kswitch.engine")

NOT_ENCODABLE = "message_not_encodable"
_CARD_FIELDS = ("2", "14", "102")
# Operations whose outcome store-and-forward is still resolving answer "pending".
RESOLVING = (Status.PENDING, Status.TIMEOUT)


class NotEncodable(Exception):
    """The bank's dialect cannot carry the message (e.g. a merchant name with characters
    outside its character set); ``field`` names the offending field when known."""

    def __init__(self, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.field = field


@dataclass(frozen=True)
class NotSent:
    """The bank never saw the message; ``reason`` is the API reason (issuer_unavailable ...)."""

    reason: str


@dataclass(frozen=True)
class Uncertain:
    """The message was written but no believable answer came: the bank may have acted on it.

    ``answer`` is the plugin's reading when the bank did answer (say an approval echoing
    another amount: status ``failed``, reason ``format_error``, ``uncertain``); None for a
    timeout or a lost link.
    """

    cause: str
    answer: BankAnswer | None = None


@dataclass(frozen=True)
class Answered:
    response: Message
    answer: BankAnswer


Outcome = NotSent | Uncertain | Answered


def is_advice(mti: str) -> bool:
    """Advices (x220, x420 ...) are told, not asked: repeated until acknowledged, never reversed."""
    return mti[2] == "2"


def repeat_mti(mti: str) -> str:
    """0220 -> 0221, 1220 -> 1221: the repeat of an advice."""
    return f"{mti[:3]}1"


def kept_fields(message: Message, bank: Bank) -> dict[str, str]:
    """The message as the journal may keep it for a later repeat or reversal: masked, with
    sensitive fields other than the card/account (sealed separately) left out."""
    masked = mask_message(message, bank.profile.dialect)
    return {k: v for k, v in masked.items() if v == message[k] or k in _CARD_FIELDS}


def resolution_draft(bank: Bank, request: Message, card: CardData | None) -> SafDraft:
    """What resolves an uncertain ``request``: its repeat (advice) or its reversal (request)."""
    if is_advice(request["t"]):
        return SafDraft(connector=bank.name, kind=SafKind.ADVICE, mti=repeat_mti(request["t"]),
                        fields=kept_fields(request, bank), card=card, max_attempts=bank.saf.max_attempts)
    reversal = mti_for(bank.profile.reversal, bank.profile.version)
    return SafDraft(connector=bank.name, kind=SafKind.REVERSAL, mti=reversal, fields=kept_fields(request, bank),
                    card=card, max_attempts=bank.saf.max_attempts)


def void_draft(bank: Bank, original: Message, card: CardData | None) -> SafDraft:
    """A void: the reversal of the original authorization or sale, delivered by store-and-forward."""
    return SafDraft(connector=bank.name, kind=SafKind.VOID, mti=mti_for(bank.profile.reversal, bank.profile.version),
                    fields=kept_fields(original, bank), card=card, max_attempts=bank.saf.max_attempts)


async def reversal_draft(journal: Journal, txn: Transaction, bank: Bank) -> SafDraft:
    """What resolves ``txn`` by its message class (a reversal, or an advice's repeat), rebuilt
    from the journalled outgoing request and the sealed card."""
    request = await journalled_request(journal, txn)
    card = journal.reveal_card(txn.card) if txn.card is not None else None
    return resolution_draft(bank, request, card)


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


class PaymentMetrics(MetricBundle):
    """Outcomes, idempotent replays and queued reversals of payments and their operations."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.outcomes = Counter(
            "kswitch_payments_total", "Payments by connector, kind and final status",
            ["connector", "kind", "status"], registry=registry,
        )
        self.replays = Counter(
            "kswitch_idempotent_replays_total", "Requests answered from an earlier request with the same idempotency key",
            registry=registry,
        )
        self.reversals_queued = Counter(
            "kswitch_reversals_queued_total", "Reversals queued in store-and-forward, by connector and cause",
            ["connector", "cause"], registry=registry,
        )


_COLUMNS = {"response_code": re.compile(r"[A-Za-z0-9]{2,3}"), "auth_code": re.compile(r"[A-Za-z0-9 ]{1,6}"),
            "rrn": re.compile(r"[A-Za-z0-9 ]{1,12}")}


def answer_columns(answer: BankAnswer, rrn: str | None = None) -> dict[str, str | None]:
    """The answer's codes as journal columns; a value the journal cannot hold (a blank or padded
    field 39 ...) is left out here: the inbound message itself is journalled as received."""
    values = {"response_code": answer.response_code, "auth_code": answer.auth_code, "rrn": answer.rrn or rrn}
    return {k: v if v is not None and _COLUMNS[k].fullmatch(v) else None for k, v in values.items()}


def settlement_column(journal: Journal, connector: str, answer: BankAnswer) -> dict[str, str]:
    """``{"business_date": ...}`` when the bank booked the operation on a date of its own (field 15,
    MMDD, read as the date nearest to the connector's open one), else nothing: the row keeps the
    date it was sent on."""
    current = journal.business_date(connector)
    if answer.settlement_date is None or current is None:
        return {}
    booked = nearest_date(answer.settlement_date, date.fromisoformat(current))
    return {"business_date": booked.isoformat()} if booked is not None else {}


def operation_view(child: Transaction) -> dict[str, Any]:
    """One capture, refund or void as the web tier sees it (``operation`` and ``operations[]``)."""
    resolving = child.status in RESOLVING
    return {
        "txn_id": child.txn_id, "kind": child.kind.value,
        "status": "pending" if resolving else API_STATUS[child.status],
        "reason": child.reason or child.status.value, "response_code": child.response_code,
        "amount": child.amount, "stan": child.stan, "rrn": child.rrn,
        "bank_fee": child.bank_fee, "merchant_fee": child.merchant_fee,
        "created_at": child.created_at.isoformat().replace("+00:00", "Z"),
    }


def _unanswered(failure: Failure) -> tuple[Outcome, None] | Failure:
    outcome = not_answered(failure)
    return outcome if isinstance(outcome, Failure) else (outcome, None)


def not_answered(failure: Failure) -> Outcome | Failure:
    """What the mux's failure means: `NotSent` or `Uncertain`; any other failure stays one."""
    e = failure.value
    if isinstance(e, NoLinkAvailable | MuxBusy):  # the mux gave the STAN back: nothing was written
        return NotSent("issuer_busy" if isinstance(e, MuxBusy) else "issuer_unavailable")
    if isinstance(e, MessageError):
        return NotSent(NOT_ENCODABLE)
    if isinstance(e, RequestTimeout | LinkLost):
        return Uncertain("issuer_timeout" if isinstance(e, RequestTimeout) else "link_lost")
    return failure


class Engine:
    """Sends messages for every caller and resolves what store-and-forward delivers."""

    def __init__(
        self,
        clock: IReactorTime,
        journal: Journal,
        banks: Mapping[str, Bank],
        saf: StoreAndForward,
        plugins: Mapping[str, ConnectorPlugin] | None = None,
    ) -> None:
        self.clock = clock
        self.journal = journal
        self.banks = banks
        self.saf = saf
        self.plugins = plugins or {}
        self._waiters: dict[str, list[Deferred[Transaction]]] = {}
        saf.build = self.build_saf
        saf.settle = self.settle_saf

    def plugin(self, bank: Bank) -> ConnectorPlugin:
        """The bank's plugin, or the no-op base behaviour for a bank without one."""
        return self.plugins.get(bank.name) or ConnectorPlugin(bank.profile.dialect)

    # -- sending ----------------------------------------------------------------------

    def check_encodes(self, bank: Bank, message: Message) -> bytes:
        """Encode ``message`` as the link will; `NotEncodable` (STAN released) if the dialect cannot.
        The bytes go to `exchange`, so the link does not encode the message again."""
        try:
            return bank.profile.dialect.encode(message)
        except (MessageError, ValueError, KeyError, UnicodeError) as e:
            bank.release_stan(message.get("11", ""))
            field = getattr(e, "field", None)
            log.warning("message_not_encodable", connector=bank.name, mti=message.get("t"), field=field,
                        error=type(e).__name__)
            raise NotEncodable(field, f"the bank's message format cannot carry this request (field {field or '?'})")

    def exchange(
        self, txn_id: str, bank: Bank, message: Message, timeout: float | None = None, encoded: bytes | None = None
    ) -> Deferred[tuple[Outcome, Received | None]]:
        """Send ``txn_id``'s journalled message (``encoded``: `check_encodes`' bytes) and classify the outcome,
        with the bank's answer masked (None if none came) for the commit that journals the outcome. A Deferred,
        not a coroutine: a payment waiting for its bank keeps no frame of this, and no copy of the bytes once
        written."""
        try:
            sent = bank.request(message, timeout, encoded=encoded)
        except Exception:
            sent = fail()
        return sent.addCallbacks(self._answered, _unanswered, callbackArgs=(txn_id, bank, message))

    def _answered(self, response: Message, txn_id: str, bank: Bank, message: Message
                  ) -> tuple[Outcome, Received | None]:
        return self.read_answer(response, txn_id, bank, message), self.received(bank, response)

    @staticmethod
    def send_to(answer_to: Answerable[Message], bank: Bank, message: Message, encoded: bytes | None = None) -> None:
        """Send a payment's journalled message and tell ``answer_to`` (the payment waiting on its bank, which
        classifies the answer itself) instead of returning a Deferred."""
        try:
            bank.request_to(answer_to, message, encoded=encoded)
        except Exception:
            answer_to.errback(Failure())

    def read_answer(self, response: Message, txn_id: str, bank: Bank, message: Message) -> Outcome:
        """Read ``response`` to ``message`` with the bank's plugin; journalling it is the caller's (`received`)."""
        try:
            answer = self.plugin(bank).read_response(message, response, bank.profile.responses)
        except Exception:  # a plugin that cannot read the answer: the bank may still have acted
            log.exception("response_unreadable", txn_id=txn_id, connector=bank.name, mti=response.get("t"))
            return Uncertain("unreadable_answer")
        if answer.uncertain or (is_advice(message["t"]) and answer.retryable):
            return Uncertain(answer.reason, answer)
        return Answered(response, answer)

    @staticmethod
    def received(bank: Bank, response: Message) -> Received:
        """``response`` masked, for the commit of the outcome it decides (`Journal.transition`)."""
        return Received(bank.name, response["t"], mask_message(response, bank.profile.dialect))

    # -- store-and-forward hooks ---------------------------------------------------------

    def build_saf(self, bank: Bank, item: SafItem, stan: str, repeat: bool) -> Message:
        """One send of a queued item: an advice's repeat (original STAN) or a reversal/void."""
        original: Message = dict(item.fields)
        if item.card is not None:
            restore_instrument(original, self.journal.reveal_card(item.card))
        plugin = self.plugin(bank)
        if item.kind is SafKind.ADVICE:
            bank.release_stan(stan)
            message = {**original, "t": item.mti, "11": bank.reserve_stan(original["11"])}
            return plugin.completion(message, original)
        if "t" not in original:
            original["t"] = item.mti
        message = reversal_request(original, bank.profile, stan, self.clock.seconds(), repeat=repeat)
        return plugin.reversal_message(message, original)

    async def settle_saf(self, item: SafItem, response: Message) -> None:
        """The bank acknowledged an item: finalize its transaction (and parent) in one commit."""
        code = response.get("39", "")
        try:
            txn = await self._settle(item, response, code)
        except TransitionRefused as e:
            log.info("saf_outcome_already_recorded", txn_id=item.txn_id, detail=str(e))
            await self.saf.complete_alone(item, code)
            txn = await self.journal.get_transaction(item.txn_id)
        for waiter in self._waiters.pop(item.txn_id, []):
            waiter.callback(txn)
        log.info("saf_acknowledged", connector=item.connector, txn_id=item.txn_id, kind=item.kind.value,
                 response_code=code)

    async def _settle(self, item: SafItem, response: Message, code: str) -> Transaction:
        ack = acknowledged(item, code)
        txn = await self.journal.get_transaction(item.txn_id)
        if txn.parent_txn_id is None:
            reversed_ = item.kind is SafKind.REVERSAL
            event = EventDraft("payment.reversed" if reversed_ else "payment.voided",
                               {"txn_id": txn.txn_id, "reversal_response_code": code})
            return await self.journal.transition(txn.txn_id, expected_from=REVERSIBLE,
                                                 to=Status.REVERSED if reversed_ else Status.VOIDED,
                                                 forget_card=True, event=event, acknowledged=ack)
        resolving = (Status.PENDING, Status.TIMEOUT)
        if item.kind is SafKind.VOID:
            event = EventDraft("payment.voided", {"txn_id": txn.parent_txn_id, "operation_txn_id": txn.txn_id,
                                                  "reversal_response_code": code})
            _, child = await self.journal.finish_operation(txn.txn_id, expected_from=resolving, to=Status.APPROVED,
                                                           forget_card=True, event=event, response_code=code or None,
                                                           acknowledged=ack)
            return child
        if item.kind is SafKind.REVERSAL:
            event = EventDraft("payment.refund_reversed", {"txn_id": txn.parent_txn_id, "operation_txn_id": txn.txn_id,
                                                           "reversal_response_code": code})
            _, child = await self.journal.finish_operation(txn.txn_id, expected_from=resolving, to=Status.REVERSED,
                                                           forget_card=True, reason="reversed_after_timeout",
                                                           event=event, acknowledged=ack)
            return child
        bank = self.banks[item.connector]
        request: Message = {**item.fields, "t": item.mti}
        answer = self.plugin(bank).read_response(request, response, bank.profile.responses)
        status = Status.APPROVED if answer.status == "approved" else Status.DECLINED
        event = EventDraft("payment.captured" if status is Status.APPROVED else "payment.capture_declined",
                           {"txn_id": txn.parent_txn_id, "operation_txn_id": txn.txn_id, "response_code": code})
        columns = answer_columns(answer, request.get("37"))
        _, child = await self.journal.finish_operation(
            txn.txn_id, expected_from=resolving, to=status, forget_card=True, event=event, reason=answer.reason,
            response_code=columns["response_code"], auth_code=columns["auth_code"], acknowledged=ack,
            **settlement_column(self.journal, bank.name, answer),
        )
        return child

    def completion(self, txn_id: str) -> Deferred[Transaction]:
        """Fires with the transaction once store-and-forward settles its item (cancel to stop waiting)."""
        waiters = self._waiters.setdefault(txn_id, [])

        def cancel(d: Deferred[Transaction]) -> None:
            if d in waiters:
                waiters.remove(d)

        d: Deferred[Transaction] = Deferred(cancel)
        waiters.append(d)
        return d
