"""Checking a bank's answer before it is believed: the default `ConnectorPlugin.read_response`.

An answer moves money only if it is about the request we sent.  A misbehaving host
(or a mismatched answer) may echo another amount, currency, processing code,
terminal, merchant or STAN, or send a response code that cannot be read at all
(blank, space-padded, NUL).  None of these may become ``approved``, and none may raise:
each is a format error, a final answer at once.  When the bank may nevertheless have
moved money (its code said approved, or cannot be read) the answer is marked
``uncertain`` and the engine reverses a request (repeats an advice) as after a timeout.

Echoes are checked where the answer carries the field: a bank that leaves a field
out of its answer contradicts nothing.  A partial approval (an approval echoing a
smaller amount for an authorization or sale) is accepted only from a connector
declaring ``partial_approvals = true``; the approved amount is then the answer's
``amount``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import structlog

from switch.iso.responses import APPROVED, FAILED, BankAnswer, ResponseTable

log = structlog.get_logger("kswitch.answercheck")

ECHOED = ("3", "4", "11", "41", "42", "49")
"""Fields identifying a request that its answer must repeat unchanged when it carries them."""
FORMAT_ERROR = "format_error"
PARTIAL_APPROVAL = "partial_approval"
_MAX_AMOUNT_DIGITS = 12
_REFERENCE = re.compile(r"[A-Za-z0-9 ]+", re.ASCII)


def response_code(value: object) -> str | None:
    """Field 39 as a code the response table can look up: 2 or 3 ASCII letters or digits,
    nothing else (no padding, no NUL, no blanks); None when it cannot be read."""
    if isinstance(value, str) and 2 <= len(value) <= 3 and value.isascii() and value.isalnum():
        return value.upper()
    return None


def amount(value: object) -> int | None:
    """Field 4 in minor units, or None when it is not 1 to 12 ASCII digits (never raises)."""
    if isinstance(value, str) and 1 <= len(value) <= _MAX_AMOUNT_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    return None


def read_answer(request: Mapping[str, object], response: Mapping[str, object], table: ResponseTable,
                confirmation_url: str | None = None) -> BankAnswer:
    """What ``response`` says about ``request``, believed only if it echoes what identifies the request."""
    raw = response.get("39")
    code = response_code(raw)
    rrn, auth = reference(response.get("37"), 12), reference(response.get("38"), 6)
    if code is None:
        log.warning("bank_answer_unreadable_code", mti=_text(response.get("t")), stan=_text(response.get("11")))
        return BankAnswer(FAILED, FORMAT_ERROR, None, rrn=rrn, uncertain=True)
    outcome = table.outcome(code)
    approved = outcome.status == APPROVED
    requested, answered = amount(request.get("4")), amount(response.get("4", request.get("4")))
    partial = (approved and table.partial_approvals and _may_be_partial(request) and requested is not None
               and answered is not None and 0 < answered < requested)
    mismatched = [f for f in ECHOED if f in response and not (f == "4" and partial)
                  and not _same(f, request.get(f), response.get(f))]
    if mismatched:
        log.warning("bank_answer_mismatch", mti=_text(response.get("t")), stan=_text(request.get("11")),
                    response_code=code, fields=mismatched)
        return BankAnswer(FAILED, FORMAT_ERROR, code, rrn=rrn, uncertain=approved)
    settled = response.get("15")
    settlement_date = settled if isinstance(settled, str) and len(settled) == 4 and settled.isdigit() else None
    if partial:
        return BankAnswer(APPROVED, PARTIAL_APPROVAL, code, auth_code=auth, rrn=rrn, amount=answered,
                          settlement_date=settlement_date)
    return BankAnswer(outcome.status, outcome.reason, code, retryable=outcome.retryable, auth_code=auth, rrn=rrn,
                      confirmation_url=confirmation_url, settlement_date=settlement_date)


def _same(field: str, sent: object, echoed: object) -> bool:
    if field == "4":
        return amount(sent) is not None and amount(sent) == amount(echoed)
    return isinstance(sent, str) and isinstance(echoed, str) and sent.strip(" ") == echoed.strip(" ")


def _may_be_partial(request: Mapping[str, object]) -> bool:
    """An authorization or sale request (x100/x200, purchase processing code): a capture,
    refund or reversal is for its amount exactly."""
    mti, processing = request.get("t"), request.get("3")
    return (isinstance(mti, str) and len(mti) == 4 and mti[1] in "12" and mti[2] == "0"
            and isinstance(processing, str) and processing.startswith("00"))


def reference(value: object, length: int) -> str | None:
    """An RRN or authorization code as the journal keeps it (letters, digits, spaces; not blank), else None."""
    if isinstance(value, str) and 0 < len(value) <= length and value.strip(" ") and _REFERENCE.fullmatch(value):
        return value
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.isprintable() else None
