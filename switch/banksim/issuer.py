"""The simulated issuer's decisions: card checks, postings, reversals and duplicates.

Pure logic: a message in, its answer out, with a clock for "today" (card expiry)
and for forgetting old transactions, so every rule can be tested with
`twisted.internet.task.Clock` while the server only moves bytes.

Decisions are made in 1987 response codes and translated with `wire_code` for a
1993 dialect (see `switch.banksim.codes`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Mapping

from twisted.internet.interfaces import IReactorTime

from switch.banksim import codes
from switch.banksim.accounts import Account
from switch.banksim.codes import wire_code
from switch.banksim.ledger import Ledger
from switch.dialect import Dialect, Message
from switch.mti import is_network, network_kind, network_response, response_mti

DEFAULT_RETENTION = 7 * 24 * 3600.0
"""How long postings (for reversals), open holds and answers (for duplicates) are kept."""

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


def instrument_id(request: Message) -> str | None:
    """The card number (field 2), or a bank account / wallet (field 102) when there is no card."""
    return request.get("2") or request.get(ACCOUNT_FIELD)


@dataclass(frozen=True)
class PendingConfirmation:
    """An authorization or sale waiting for the customer's decision on the bank's page."""

    ref: str
    request: Message
    effect: str
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


@dataclass
class Posting:
    """One approved movement of money, or hold, kept so that a reversal can undo it."""

    id: int
    pan: str
    effect: str  # "debit" | "credit" | "hold"
    amount: int
    auth_code: str
    mti: str
    stan: str
    times: tuple[str, ...]
    acquirer: str
    rrn: str | None
    terminal: str | None
    at: float
    reversed: bool = False


@dataclass(frozen=True)
class _Answered:
    at: float
    fingerprint: tuple[str | None, ...]
    answer: Message


class Issuer:
    """Answers one dialect's requests against a ledger, as an issuing bank's host would.

    ``cvv_code`` is the answer to a wrong CVV (``N7`` by default; in the dialect's own
    form or a 1987 code with a known 1993 mapping).
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
        self._postings: dict[int, Posting] = {}
        self._answered: dict[tuple[str | None, ...], _Answered] = {}
        self._ids = itertools.count(1)
        self._refs = itertools.count(1)
        self.pending: dict[str, PendingConfirmation] = {}
        self.confirm_url_base = "http://127.0.0.1"

    def answer(self, request: Message, decline_all: str | None = None) -> Message:
        """The answer to one request (the MTI must be four digits with an even function digit).

        ``decline_all`` answers every authorization and financial request with that code,
        leaving the ledger alone; completions, reversals and network messages go on as usual.
        """
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
        key = (base_mti(mti), request["11"], request.get("37"), request.get("41"))
        fingerprint = (instrument_id(request), request.get("3"), request.get("4"))
        earlier = self._answered.get(key)
        if earlier is not None:
            return earlier.answer if earlier.fingerprint == fingerprint else self._reply(request, codes.DUPLICATE)
        answer = getattr(self, f"_{kind}")(request)
        self._answered[key] = _Answered(self._clock.seconds(), fingerprint, answer)
        return answer

    def format_error(self, mti: str) -> Message:
        """The answer to a request whose MTI was readable but the rest was not."""
        return self._reply({"t": mti}, codes.FORMAT_ERROR)

    def _authorization(self, request: Message) -> Message:
        if request["3"][:2] not in _PURCHASE:
            return self._reply(request, codes.INVALID_TRANSACTION)
        return self._decide(request, "hold")

    def _financial(self, request: Message) -> Message:
        transaction = request["3"][:2]
        if transaction == _REFUND:
            return self._decide(request, "credit")
        if transaction not in _PURCHASE:
            return self._reply(request, codes.INVALID_TRANSACTION)
        return self._decide(request, "debit")

    def _decide(self, request: Message, effect: str) -> Message:
        account = self.ledger.account(instrument_id(request) or "")
        amount = int(request["4"])
        code = self._decline_reason(account, request, amount, moves_money_out=effect != "credit")
        if code is not None:
            return self._reply(request, code)
        if account is not None and account.status == "confirm" and effect != "credit":
            ref = f"C{next(self._refs):06d}"
            self.pending[ref] = PendingConfirmation(ref, dict(request), effect)
            url = f"{self.confirm_url_base}/confirm/{ref}"
            return self._reply(request, codes.PENDING_CUSTOMER, {CONFIRMATION_URL_FIELD: url})
        posting = self._post(request, effect, amount)
        return self._reply(request, codes.APPROVED, {"38": posting.auth_code})

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
        posting = self._post(request, pending.effect, amount)
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

        Advices are told, not asked, so only an unknown card is refused; a completion
        that matches no open hold is posted as it stands (a forced post).
        """
        if self.ledger.account(instrument_id(request) or "") is None:
            return self._reply(request, codes.INVALID_CARD)
        hold = self._original_of(request, effect="hold")
        if hold is not None:
            self.ledger.release(hold.id)
        posting = self._post(request, "debit", int(request["4"]), hold.auth_code if hold else None)
        return self._reply(request, codes.APPROVED, {"38": posting.auth_code})

    def _reversal(self, request: Message) -> Message:
        """Undo the original once; an unknown or already reversed original is still approved."""
        original = self._original_of(request)
        if original is not None and not original.reversed:
            original.reversed = True
            if original.effect == "debit":
                self.ledger.credit(original.pan, original.amount)
            elif original.effect == "credit":
                self.ledger.debit(original.pan, original.amount)
            else:
                self.ledger.release(original.id)
        return self._reply(request, codes.APPROVED)

    def _original_of(self, request: Message, effect: str | None = None) -> Posting | None:
        """The most recent posting the request points at: by original data elements, else by RRN."""
        candidates = [
            p for p in reversed(self._postings.values())
            if (effect is None or p.effect == effect) and (instrument_id(request) or p.pan) == p.pan
        ]
        ref = parse_original_data(request.get(self._original_field, ""))
        if ref is not None:
            for p in candidates:
                if (
                    base_mti(p.mti) == base_mti(ref.mti)
                    and p.stan == ref.stan
                    and (not ref.time.strip("0") or ref.time in p.times)
                    and (not ref.acquirer or not p.acquirer or ref.acquirer == p.acquirer)
                ):
                    return p
        rrn = request.get("37")
        if rrn is None:
            return None
        terminal = request.get("41")
        for p in candidates:
            if p.rrn == rrn and (terminal is None or p.terminal is None or p.terminal == terminal):
                return p
        return None

    def _post(self, request: Message, effect: str, amount: int, auth_code: str | None = None) -> Posting:
        posting_id = next(self._ids)
        pan = instrument_id(request) or ""
        posting = Posting(
            id=posting_id,
            pan=pan,
            effect=effect,
            amount=amount,
            auth_code=auth_code or f"{posting_id:06d}"[-6:],
            mti=request["t"],
            stan=request["11"],
            times=tuple(request[n] for n in ("7", "12") if n in request),
            acquirer=request.get("32", "").lstrip("0"),
            rrn=request.get("37"),
            terminal=request.get("41"),
            at=self._clock.seconds(),
        )
        if effect == "debit":
            self.ledger.debit(pan, amount)
        elif effect == "credit":
            self.ledger.credit(pan, amount)
        else:
            self.ledger.hold(posting_id, pan, amount)
        self._postings[posting_id] = posting
        return posting

    def _reply(self, request: Message, code: str, extra: Mapping[str, str] | None = None) -> Message:
        echoed = (*ECHOED, self._original_field)
        answer = {n: request[n] for n in echoed if n in request}
        answer["t"] = response_mti(request["t"])
        answer["39"] = wire_code(code, self.version)
        answer.update(extra or {})
        return answer

    def _today_yymm(self) -> str:
        return time.strftime("%y%m", time.gmtime(self._clock.seconds()))

    def _forget_old(self) -> None:
        """Drop postings and remembered answers past retention; a forgotten hold expires."""
        horizon = self._clock.seconds() - self._retention
        while self._postings:
            posting = next(iter(self._postings.values()))
            if posting.at >= horizon:
                break
            del self._postings[posting.id]
            self.ledger.release(posting.id)
        while self._answered:
            key, answered = next(iter(self._answered.items()))
            if answered.at >= horizon:
                break
            del self._answered[key]
