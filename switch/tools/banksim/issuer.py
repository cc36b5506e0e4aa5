"""The simulated issuer's decisions: card checks, postings, reversals and duplicates.

Pure logic: a message in, its answer out, with a clock for "today" (card expiry)
and for forgetting old transactions, so every rule can be tested with
`twisted.internet.task.Clock` while the server only moves bytes.

Decisions are made in 1987 response codes and translated with `wire_code` for a
1993 dialect (see `switch.tools.banksim.codes`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from twisted.internet.interfaces import IReactorTime

from switch.iso.dialect import Dialect, Message
from switch.iso.mti import is_network, network_kind, network_response, response_mti
from switch.tools.banksim import codes
from switch.tools.banksim.accounts import Account
from switch.tools.banksim.codes import wire_code
from switch.tools.banksim.ledger import CREDIT, DEBIT, HOLD, ORIGINAL_KINDS, Ledger, Posting, answer_key, fingerprint

DEFAULT_RETENTION = 7 * 24 * 3600.0
"""How long postings can be reversed or completed, holds stay open and answers are remembered for duplicates."""

# Fields a host copies from the request into its answer. Never expiry, track, CVV or PIN.
ECHOED = ("2", "3", "4", "7", "11", "12", "13", "24", "32", "33", "37", "41", "42", "49")

_KINDS = {"10": "authorization", "20": "financial", "22": "completion", "40": "reversal", "42": "reversal"}
_REQUIRED = {
    "authorization": ("3", "4", "11"),
    "financial": ("3", "4", "11"),
    "completion": ("4", "11"),
    "reversal": ("11",),
}
_NEEDS_INSTRUMENT = ("authorization", "financial", "completion")
ACCOUNT_FIELD = "102"
CONFIRMATION_URL_FIELD = "62"
ORDER_FIELD = "48"
CONFIRM_TAG = "04"
"""Sakura's order data (field 48, TLV: two-character tag, three-digit length, value); tag ``04`` = ``1``
asks that the customer confirm the payment (connectors/sakura.py)."""


def instrument_id(request: Message) -> str | None:
    """The card number (field 2), or a bank account / wallet (field 102) when there is no card."""
    return request.get("2") or request.get(ACCOUNT_FIELD)


def confirmation_asked(request: Message) -> bool:
    """Whether the acquirer asked that the customer confirm (Sakura's field 48 TLV tag 04 = 1); a field
    48 that is not such a TLV asks nothing."""
    text, i = request.get(ORDER_FIELD, ""), 0
    while i + 5 <= len(text) and text[i + 2:i + 5].isdigit():
        tag, end = text[i:i + 2], i + 5 + int(text[i + 2:i + 5])
        if tag == CONFIRM_TAG:
            return text[i + 5:end] == "1"
        i = end
    return False


@dataclass(frozen=True)
class PendingConfirmation:
    """An authorization or sale waiting for the customer's decision on the bank's page."""

    ref: str
    request: Message
    kind: str


_PURCHASE = ("00", "01")
_REFUND = "20"


def base_mti(mti: str) -> str:
    """The MTI with a repeat origin folded back: 0401 -> 0400, 1421 -> 1420."""
    return mti[:3] + "0" if mti[3] in "01" else mti


@dataclass(frozen=True)
class OriginalRef:
    """What a reversal's original-data-elements field says about the original."""

    mti: str
    stan: str
    time: str
    acquirer: str


def parse_original_data(value: str) -> OriginalRef | None:
    """Read field 90 (1987 layout, 42 digits) or field 56 (1993 layout), None when neither.

    1987: MTI n4, STAN n6, transmission date/time n10, acquirer n11, forwarder n11.
    1993: MTI n4, STAN n6, local date/time n12, then acquirer as LLVAR n..11.
    """
    if not value.isdigit():
        return None
    if len(value) == 42:
        return OriginalRef(value[:4], value[4:10], value[10:20], value[20:31].lstrip("0"))
    if 22 <= len(value) <= 35:
        rest = value[22:]
        acquirer = rest[2 : 2 + int(rest[:2])] if len(rest) >= 2 else ""
        return OriginalRef(value[:4], value[4:10], value[10:22], acquirer.lstrip("0"))
    return None



class Issuer:
    """Answers one dialect's requests against a ledger, as an issuing bank's host would.

    ``cvv_code`` is the answer to a wrong CVV (``N7`` by default; in the dialect's own
    form or a 1987 code with a known 1993 mapping).  Each request is decided and written
    to the ledger in one ledger transaction, committed before `answer` returns.
    """

    def __init__(
        self,
        ledger: Ledger,
        dialect: Dialect,
        clock: IReactorTime,
        cvv_code: str = codes.CVV_MISMATCH,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        self.ledger = ledger
        self.version = dialect.version
        self._cvv_field = dialect.cvv_field
        self._original_field = dialect.original_data_field
        self._clock = clock
        self._cvv_code = cvv_code
        wire_code(cvv_code, self.version)
        self._retention = retention
        self._forgotten_at = float("-inf")
        self._refs = itertools.count(1)
        self.pending: dict[str, PendingConfirmation] = {}
        """Waiting for the customer; kept in memory only (a restarted banksim has none)."""
        self.confirm_url_base = "http://127.0.0.1"

    def answer(self, request: Message, decline_all: str | None = None) -> Message:
        """The answer to one request (the MTI must be four digits with an even function digit).

        ``decline_all`` answers every authorization and financial request with that code,
        leaving the ledger alone; completions, reversals and network messages go on as usual.
        """
        with self.ledger.transaction():
            return self._answer(request, decline_all)

    def _answer(self, request: Message, decline_all: str | None) -> Message:
        self._forget_old()
        mti = request["t"]
        if is_network(mti):
            kind = network_kind(request, self.version)
            code = None if kind else wire_code(codes.INVALID_TRANSACTION, self.version)
            return network_response(request, self.version, code)
        kind = _KINDS.get(mti[1:3])
        if kind is None:
            return self._reply(request, codes.INVALID_TRANSACTION)
        missing = [n for n in _REQUIRED[kind] if n not in request]
        if kind in _NEEDS_INSTRUMENT and instrument_id(request) is None:
            missing.append("2")
        if missing or not request.get("4", "0").isdigit():
            return self._reply(request, codes.FORMAT_ERROR)
        if decline_all is not None and kind in ("authorization", "financial"):
            return self._reply(request, decline_all)
        key = answer_key((base_mti(mti), request["11"], request.get("37"), request.get("41")))
        print_ = fingerprint((instrument_id(request), request.get("3"), request.get("4")))
        earlier = self.ledger.remembered(key)
        if earlier is not None:
            if earlier.fingerprint != print_:
                return self._reply(request, codes.DUPLICATE)
            replay = dict(earlier.answer)
            if earlier.echoes_pan and "2" in request:
                replay["2"] = request["2"]
            return replay
        answer = getattr(self, f"_{kind}")(request)
        self.ledger.remember(key, self._clock.seconds(), print_, answer)
        return answer

    def format_error(self, mti: str) -> Message:
        """The answer to a request whose MTI was readable but the rest was not."""
        return self._reply({"t": mti}, codes.FORMAT_ERROR)

    def _authorization(self, request: Message) -> Message:
        if request["3"][:2] not in _PURCHASE:
            return self._reply(request, codes.INVALID_TRANSACTION)
        return self._decide(request, "authorization_hold")

    def _financial(self, request: Message) -> Message:
        transaction = request["3"][:2]
        if transaction == _REFUND:
            return self._decide(request, "refund_credit")
        if transaction not in _PURCHASE:
            return self._reply(request, codes.INVALID_TRANSACTION)
        return self._decide(request, "sale_debit")

    def _decide(self, request: Message, kind: str) -> Message:
        account = self.ledger.account(instrument_id(request) or "")
        amount = int(request["4"])
        refund = kind == "refund_credit"
        code = self._decline_reason(account, request, amount, moves_money_out=not refund)
        if code is not None:
            return self._reply(request, code)
        asked = self._cvv_field != ORDER_FIELD and confirmation_asked(request)
        if account is not None and (account.status == "confirm" or asked) and not refund:
            ref = f"C{next(self._refs):06d}"
            self.pending[ref] = PendingConfirmation(ref, dict(request), kind)
            url = f"{self.confirm_url_base}/confirm/{ref}"
            return self._reply(request, codes.PENDING_CUSTOMER, {CONFIRMATION_URL_FIELD: url})
        if refund:
            posting = self._refund(request, amount)
        else:
            posting = self._post(request, kind, amount, new_auth_code=True)
        return self._reply(request, codes.APPROVED, {"38": posting.auth_code or ""})

    def _refund(self, request: Message, amount: int) -> Posting:
        """A refund is credited as asked; one repeating an earlier refund is flagged ``duplicate_refund``.

        A repeat is an earlier refund on the account of the same amount and the same original
        (when the refund points at one) that has the refund's own RRN, or its STAN, terminal
        and transmission time (an exact repeat of all keys is answered as a duplicate earlier).
        """
        original = self._original_of(request, kinds=("sale_debit", "completion_debit"))
        rrn = request.get("37")
        number, since = instrument_id(request), self._horizon()
        same = {"amount": amount, "original": original.id if original else None}
        own_rrn = rrn is not None and (original is None or original.rrn != rrn)
        by_rrn = own_rrn and self.ledger.find(("refund_credit",), since, number, rrn=rrn, **same)
        by_stan = any(
            earlier.terminal == request.get("41") and earlier.times == self._times(request)
            for earlier in self.ledger.find(("refund_credit",), since, number, stan=request["11"], **same)
        )
        repeated = bool(by_rrn) or by_stan
        return self._post(request, "refund_credit", amount, new_auth_code=True,
                          original=original.id if original else None,
                          anomaly="duplicate_refund" if repeated else None)

    def decide_pending(self, ref: str, approve: bool) -> tuple[PendingConfirmation, str, str | None]:
        """The customer decided on the bank's page: (the pending payment, response code, auth code).

        Approval moves the money now (funds are checked again: they may have gone
        meanwhile); rejection is answered do-not-honour.  KeyError for an unknown ref.
        """
        pending = self.pending.pop(ref)
        request = pending.request
        if not approve:
            return pending, wire_code(codes.DO_NOT_HONOUR, self.version), None
        amount = int(request["4"])
        account = self.ledger.account(instrument_id(request) or "")
        code = self._decline_reason(account, request, amount, moves_money_out=True)
        if code is not None:
            return pending, wire_code(code, self.version), None
        with self.ledger.transaction():
            posting = self._post(request, pending.kind, amount, new_auth_code=True)
        return pending, wire_code(codes.APPROVED, self.version), posting.auth_code

    def _decline_reason(self, account: Account | None, request: Message, amount: int, moves_money_out: bool) -> str | None:
        """The first check an issuer would fail, in the documented order; None to approve."""
        if account is None:
            return codes.INVALID_CARD
        if account.expiry < self._today_yymm() or request.get("14", account.expiry) != account.expiry:
            return codes.EXPIRED_CARD
        if self._cvv_field is not None and request.get(self._cvv_field, account.cvv) != account.cvv:
            return self._cvv_code
        if account.status == "blocked":
            return codes.RESTRICTED_CARD
        if account.status == "do_not_honour":
            return codes.DO_NOT_HONOUR
        if request.get("49", account.currency.numeric) != account.currency.numeric:
            return codes.INVALID_TRANSACTION
        if moves_money_out and account.limit is not None and amount > account.limit:
            return codes.EXCEEDS_LIMIT
        if moves_money_out and amount > self.ledger.available(account.pan):
            return codes.INSUFFICIENT_FUNDS
        return None

    def _completion(self, request: Message) -> Message:
        """An advice completing a pre-authorization: the hold goes, the final amount is debited.

        Advices are told, not asked, so only an unknown card is refused.  With processing
        code 20 it is a refund advice: credited like a refund (`_refund`), without its checks.  A completion that
        matches no open hold is posted as it stands (a forced post) and flagged:
        ``double_completion`` when its hold was completed before, else ``completion_without_hold``.
        """
        if self.ledger.account(instrument_id(request) or "") is None:
            return self._reply(request, codes.INVALID_CARD)
        amount = int(request["4"])
        if request.get("3", "")[:2] == _REFUND:
            posting = self._refund(request, amount)
            return self._reply(request, codes.APPROVED, {"38": posting.auth_code or ""})
        hold = self._original_of(request, kinds=("authorization_hold",))
        if hold is None:
            posting = self._post(request, "completion_debit", amount, new_auth_code=True,
                                 anomaly="completion_without_hold")
        elif hold.open:
            posting = self._post(request, "completion_debit", amount, auth_code=hold.auth_code, original=hold.id)
            self.ledger.post(None, "hold_release", hold.amount, self._clock.seconds(), account_of=hold,
                             original=hold.id, **self._keys(request))
            self.ledger.close_hold(hold, posting.id)
        else:
            completed = hold.closed_by is not None and self.ledger.posting(hold.closed_by).kind == "completion_debit"
            posting = self._post(request, "completion_debit", amount, auth_code=hold.auth_code, original=hold.id,
                                 anomaly="double_completion" if completed else "completion_without_hold")
        return self._reply(request, codes.APPROVED, {"38": posting.auth_code or ""})

    def _reversal(self, request: Message) -> Message:
        """Undo the original once; an unknown or already reversed original is still approved.

        Reversing a pre-authorization whose hold is no longer open releases nothing (a
        ``reversal_release`` of 0); a reversal of nothing known is flagged ``reversal_of_unknown``.
        """
        original = self._original_of(request, kinds=ORIGINAL_KINDS)
        now = self._clock.seconds()
        if original is None:
            self.ledger.post(instrument_id(request), "reversal", int(request.get("4", "0")), now,
                             anomaly="reversal_of_unknown", **self._keys(request))
        elif not original.reversed:
            kind = {DEBIT: "reversal_credit", CREDIT: "reversal_debit", HOLD: "reversal_release"}[original.effect]
            amount = 0 if original.effect == HOLD and not original.open else original.amount
            posting = self.ledger.post(None, kind, amount, now, account_of=original, original=original.id,
                                       **self._keys(request))
            self.ledger.mark_reversed(original, posting.id)
            if original.open:
                self.ledger.close_hold(original, posting.id)
        return self._reply(request, codes.APPROVED)

    def _original_of(self, request: Message, kinds: Sequence[str]) -> Posting | None:
        """The most recent posting the request points at: by original data elements, else by RRN."""
        number = instrument_id(request)
        since = self._horizon()
        ref = parse_original_data(request.get(self._original_field, ""))
        if ref is not None:
            for p in self.ledger.find(kinds, since, number, stan=ref.stan):
                if (
                    base_mti(p.mti or "") == base_mti(ref.mti)
                    and (not ref.time.strip("0") or ref.time in p.times)
                    and (not ref.acquirer or not p.acquirer or ref.acquirer == p.acquirer)
                ):
                    return p
        rrn = request.get("37")
        if rrn is None:
            return None
        terminal = request.get("41")
        for p in self.ledger.find(kinds, since, number, rrn=rrn):
            if terminal is None or p.terminal is None or p.terminal == terminal:
                return p
        return None

    def _post(self, request: Message, kind: str, amount: int, **details: Any) -> Posting:
        return self.ledger.post(instrument_id(request), kind, amount, self._clock.seconds(),
                                **self._keys(request), **details)

    def _keys(self, request: Message) -> dict[str, Any]:
        """What identifies the message a posting comes from, for matching and for readers."""
        return {"mti": request["t"], "stan": request.get("11"), "rrn": request.get("37"),
                "terminal": request.get("41"), "times": self._times(request),
                "acquirer": request.get("32", "").lstrip("0")}

    @staticmethod
    def _times(request: Message) -> tuple[str, ...]:
        return tuple(request[n] for n in ("7", "12") if n in request)

    def _reply(self, request: Message, code: str, extra: Mapping[str, str] | None = None) -> Message:
        echoed = (*ECHOED, self._original_field)
        answer = {n: request[n] for n in echoed if n in request}
        answer["t"] = response_mti(request["t"])
        answer["39"] = wire_code(code, self.version)
        answer.update(extra or {})
        return answer

    def _today_yymm(self) -> str:
        return time.strftime("%y%m", time.gmtime(self._clock.seconds()))

    def _horizon(self) -> float:
        return self._clock.seconds() - self._retention

    def _forget_old(self) -> None:
        """Past retention a hold still open expires; remembered answers are forgotten (checked
        at most once a second: two queries per message would be most of banksim's work)."""
        now = self._clock.seconds()
        if now - self._forgotten_at < 1.0:
            return
        self._forgotten_at = now
        self.ledger.expire_holds(self._horizon(), now)
        self.ledger.forget_answers(self._horizon())
