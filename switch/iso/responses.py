"""Response-code tables: a bank's field 39 becomes a status and a normalised reason.

The web tier should never have to know that "51" means insufficient funds at one bank
and "116" at another.  Each connector starts from the shared default table for its
ISO version and overrides the codes its bank uses differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

APPROVED, DECLINED, FAILED = "approved", "declined", "failed"


@dataclass(frozen=True)
class Outcome:
    status: str  # approved | declined | failed
    reason: str
    retryable: bool = False  # the issuer might say otherwise later (91, 96, 68): never retried blindly


@dataclass(frozen=True)
class BankAnswer:
    """What a bank's answer means, as its connector plugin reads it.

    ``uncertain`` marks an answer that cannot be believed although the bank may have
    acted on the request (say an approval echoing another amount): the engine treats it
    like a timeout, so a request is reversed and an advice repeated. ``amount`` is the
    approved amount when the bank approved less than asked (a declared partial approval).
    """

    status: str  # approved | declined | failed
    reason: str
    response_code: str | None
    retryable: bool = False
    auth_code: str | None = None
    rrn: str | None = None
    amount: int | None = None
    confirmation_url: str | None = None
    uncertain: bool = False
    settlement_date: str | None = None
    """Field 15 as the bank sent it (MMDD): the business date the bank booked the operation on."""


def _d(reason: str) -> Outcome:
    return Outcome(DECLINED, reason)


DEFAULT_1987: dict[str, Outcome] = {
    "00": Outcome(APPROVED, "approved"),
    "01": _d("refer_to_issuer"),
    "03": _d("invalid_merchant"),
    "04": _d("pick_up_card"),
    "05": _d("do_not_honour"),
    "10": Outcome(APPROVED, "approved"),  # approved for a partial amount: field 4 says how much
    "12": _d("invalid_transaction"),
    "13": _d("invalid_amount"),
    "14": _d("invalid_card"),
    "30": Outcome(FAILED, "format_error"),
    "41": _d("lost_card"),
    "43": _d("stolen_card"),
    "51": _d("insufficient_funds"),
    "54": _d("expired_card"),
    "55": _d("incorrect_pin"),
    "57": _d("not_permitted_to_cardholder"),
    "58": _d("not_permitted_to_terminal"),
    "61": _d("exceeds_limit"),
    "62": _d("restricted_card"),
    "65": _d("exceeds_frequency_limit"),
    "68": Outcome(FAILED, "issuer_late_response", retryable=True),
    "75": _d("pin_tries_exceeded"),
    "91": Outcome(FAILED, "issuer_unavailable", retryable=True),
    "92": Outcome(FAILED, "unable_to_route"),
    "94": Outcome(FAILED, "duplicate_transmission"),
    "96": Outcome(FAILED, "system_malfunction", retryable=True),
    "N7": _d("cvv_mismatch"),
}

DEFAULT_1993: dict[str, Outcome] = {
    "000": Outcome(APPROVED, "approved"),
    "001": Outcome(APPROVED, "approved"),
    "002": Outcome(APPROVED, "approved"),  # approved for a partial amount: field 4 says how much
    "100": _d("do_not_honour"),
    "101": _d("expired_card"),
    "102": _d("suspected_fraud"),
    "106": _d("pin_tries_exceeded"),
    "107": _d("refer_to_issuer"),
    "110": _d("invalid_amount"),
    "111": _d("invalid_card"),
    "116": _d("insufficient_funds"),
    "117": _d("incorrect_pin"),
    "118": _d("invalid_card"),
    "119": _d("not_permitted_to_cardholder"),
    "120": _d("not_permitted_to_terminal"),
    "121": _d("exceeds_limit"),
    "123": _d("exceeds_frequency_limit"),
    "125": _d("restricted_card"),
    "129": _d("cvv_mismatch"),
    "200": _d("pick_up_card"),
    "904": Outcome(FAILED, "format_error"),
    "907": Outcome(FAILED, "issuer_unavailable", retryable=True),
    "908": Outcome(FAILED, "unable_to_route"),
    "909": Outcome(FAILED, "system_malfunction", retryable=True),
    "911": Outcome(FAILED, "issuer_late_response", retryable=True),
    "913": Outcome(FAILED, "duplicate_transmission"),
}

UNKNOWN = Outcome(DECLINED, "declined_unknown_code")


@dataclass(frozen=True)
class ResponseTable:
    """How a connector's answers read: its codes, and whether it may approve less than asked
    (``partial_approvals``; otherwise an approval echoing a smaller amount is a format error)."""

    codes: Mapping[str, Outcome]
    partial_approvals: bool = False

    @classmethod
    def for_version(
        cls, version: int, overrides: Mapping[str, Outcome] | None = None, partial_approvals: bool = False
    ) -> ResponseTable:
        base = DEFAULT_1987 if version == 1987 else DEFAULT_1993
        return cls({**base, **(overrides or {})}, partial_approvals)

    def outcome(self, code: str | None) -> Outcome:
        """Unknown codes decline (never approve): money only moves on a code we understand."""
        if code is None:
            return Outcome(FAILED, "format_error")
        return self.codes.get(code.strip().upper(), UNKNOWN)

    def is_approved(self, code: str | None) -> bool:
        return self.outcome(code).status == APPROVED
